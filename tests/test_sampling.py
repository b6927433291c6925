"""Each sampling control does what it says: the pure processors, then end to end through generate."""

from __future__ import annotations

import math

import pytest
import torch

from horror import generation
from horror.config import GenerationConfig
from horror.model_folder import load_model_folder
from horror.sampling import (
    apply_min_p,
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    process_logits,
    sample_next,
)

NEG_INF = float("-inf")


def logits_from_probs(*probs: float) -> torch.Tensor:
    return torch.tensor([probs]).log()


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def test_top_k_keeps_the_k_best():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 2.5]])
    assert kept(apply_top_k(logits, 2)) == [1, 4]
    assert torch.equal(apply_top_k(logits, 0), logits)  # 0 disables


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    logits = logits_from_probs(0.5, 0.3, 0.15, 0.05)
    assert kept(apply_top_p(logits, 0.75)) == [0, 1]
    assert kept(apply_top_p(logits, 0.85)) == [0, 1, 2]
    assert kept(apply_top_p(logits, 0.01)) == [0]  # the best token always survives
    assert torch.equal(apply_top_p(logits, 1.0), logits)


def test_min_p_keeps_tokens_at_least_min_p_times_the_best():
    logits = logits_from_probs(0.5, 0.3, 0.15, 0.05)
    assert kept(apply_min_p(logits, 0.5)) == [0, 1]  # threshold 0.25
    assert kept(apply_min_p(logits, 0.05)) == [0, 1, 2, 3]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_in_context():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    context = torch.tensor([[0, 1, 1]])
    penalised = apply_repetition_penalty(logits, context, 2.0)
    assert penalised.tolist() == [[1.0, -4.0, 1.0, -1.0]]  # tokens 2 and 3 are not in context
    assert torch.equal(apply_repetition_penalty(logits, context, 1.0), logits)


def test_no_repeat_ngram_bans_the_token_that_would_repeat_an_ngram():
    context = torch.tensor([[5, 6, 7, 5, 6]])
    logits = torch.zeros(1, 10)
    assert kept(apply_no_repeat_ngram(logits, context, 3)) == [0, 1, 2, 3, 4, 5, 6, 8, 9]  # 5 6 -> 7 banned
    assert kept(apply_no_repeat_ngram(logits, context, 2)) == [0, 1, 2, 3, 4, 5, 6, 8, 9]  # 6 -> 7 banned
    assert kept(apply_no_repeat_ngram(logits, context, 0)) == list(range(10))


def test_a_row_left_with_no_choice_falls_back_to_free_choice():
    context = torch.tensor([[1, 0, 1]])  # 1-grams: every seen token is banned
    logits = torch.tensor([[0.0, 0.0]])
    settings = GenerationConfig(no_repeat_ngram_size=1, temperature=1.0, top_k=0, top_p=1.0)
    processed = process_logits(logits, context, settings)
    assert torch.isfinite(processed).any()


def test_disallowed_eos_gets_minus_infinity():
    settings = GenerationConfig(allow_eos=False, repetition_penalty=1.0, top_k=0, top_p=1.0)
    processed = process_logits(torch.zeros(1, 5), torch.tensor([[1]]), settings, eos_id=2)
    assert processed[0, 2] == NEG_INF and torch.isfinite(processed[0, [0, 1, 3, 4]]).all()


def test_temperature_scales_logits_and_zero_is_argmax():
    settings = GenerationConfig(temperature=0.5, top_k=0, top_p=1.0, repetition_penalty=1.0)
    logits = torch.tensor([[1.0, 2.0]])
    assert process_logits(logits, torch.tensor([[0]]), settings).tolist() == [[2.0, 4.0]]
    assert sample_next(torch.tensor([[0.1, 0.9, 0.3]]), 0.0, None).tolist() == [1]


def test_sampling_follows_the_distribution():
    generator = torch.Generator().manual_seed(0)
    logits = logits_from_probs(0.8, 0.2).repeat(2000, 1)
    share = sample_next(logits, 1.0, generator).float().mean().item()  # fraction of token 1
    assert math.isclose(share, 0.2, abs_tol=0.04)


# ----- end to end: the same controls through the one generation path ------------------------


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model_folder(tiny_model_dir)


def write(loaded, n: int = 1, **settings) -> list[generation.Generation]:
    base = dict(max_new_tokens=15, allow_eos=False, repetition_penalty=1.0, top_k=0, top_p=1.0)
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("I heard a knock.")]
    return generation.generate(loaded.model, loaded.tokenizer, prompt, GenerationConfig(**{**base, **settings}), n)


def test_top_k_one_is_greedy(loaded):
    greedy = write(loaded, temperature=0)[0].token_ids
    for seed in range(3):
        assert write(loaded, temperature=1.5, top_k=1, seed=seed)[0].token_ids == greedy


def test_temperature_zero_ignores_the_seed(loaded):
    assert write(loaded, temperature=0, seed=1)[0].token_ids == write(loaded, temperature=0, seed=2)[0].token_ids


def test_same_seed_reproduces_and_different_seed_differs(loaded):
    first = [g.token_ids for g in write(loaded, n=3, temperature=1.0, seed=11)]
    again = [g.token_ids for g in write(loaded, n=3, temperature=1.0, seed=11)]
    other = [g.token_ids for g in write(loaded, n=3, temperature=1.0, seed=12)]
    assert first == again
    assert first != other


def test_no_repeat_ngram_size_leaves_no_repeated_ngram(loaded):
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("I heard a knock.")]
    for seed in range(3):
        written = write(loaded, temperature=1.0, no_repeat_ngram_size=2, seed=seed, max_new_tokens=40)[0]
        tokens = prompt + written.token_ids
        bigrams = list(zip(tokens, tokens[1:]))
        assert len(bigrams) == len(set(bigrams))


def test_top_k_limits_choices_to_the_k_best_at_each_step(loaded):
    # With k=2 every sampled token is one of the model's two best for its context.
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("I heard a knock.")]
    tokens = write(loaded, temperature=2.0, top_k=2, seed=5, max_new_tokens=10)[0].token_ids
    with torch.no_grad():
        logits = loaded.model(torch.tensor([prompt + tokens]))[0]
    for step, token in enumerate(tokens):
        best_two = torch.topk(logits[len(prompt) - 1 + step], 2).indices.tolist()
        assert token in best_two
