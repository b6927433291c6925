"""The C sampler (horror/csrc/sampler.c via NativeGPT.choose_next): the same tokens as the PyTorch
sampler for the same seed, the same log-probabilities, the raw logits untouched, and every case it
does not cover handed back to PyTorch."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from horror import generation
from horror.config import GenerationConfig, model_preset
from horror.model import GPT
from horror.native import NativeError, NativeGPT
from horror.sampling import choose_next_and_log_probs

pytestmark = pytest.mark.usefixtures("c_decoder")
VOCAB = 300
EOS = 2
COVERED = [
    GenerationConfig(temperature=t, top_k=k, top_p=p, min_p=m, repetition_penalty=r, allow_eos=eos)
    for t, k, p, m, r, eos in itertools.product(
        [0.0, 0.4, 1.5], [1, 5, 30], [0.5, 0.9, 1.0], [0.0, 0.2], [1.0, 1.3], [True, False]
    )
]


@pytest.fixture(scope="module")
def native_model() -> NativeGPT:
    torch.manual_seed(0)
    return NativeGPT(GPT(model_preset("test-tiny", vocab_size=VOCAB)).eval(), choose_next_and_log_probs)


def random_case(seed: int, batch: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Odd seeds shift the logits below zero, where the penalty multiplies instead of divides.
    logits = torch.randn(batch, VOCAB, generator=generator) * 3 - (8 if seed % 2 else 0)
    context = torch.randint(0, 40, (batch, 50), generator=generator)  # many repeats, some of them seen twice
    return logits, context


def label(settings: GenerationConfig) -> str:
    return (
        f"t{settings.temperature}-k{settings.top_k}-p{settings.top_p}-m{settings.min_p}-"
        f"r{settings.repetition_penalty}-eos{settings.allow_eos}"
    )


@pytest.mark.parametrize("settings", COVERED, ids=label)
def test_the_c_sampler_draws_what_pytorch_draws_for_the_same_seed(native_model, settings):
    for seed in range(5):
        logits, context = random_case(seed)
        untouched = logits.clone()
        expected_ids, expected_log_probs = choose_next_and_log_probs(
            logits, context, settings, torch.Generator().manual_seed(seed), EOS
        )
        ids, log_probs = native_model.choose_next(logits, context, settings, torch.Generator().manual_seed(seed), EOS)
        assert torch.equal(ids, expected_ids)
        assert torch.allclose(log_probs, expected_log_probs, atol=1e-5)
        assert torch.equal(logits, untouched)  # the caller's logits are the raw ones still
        if not settings.allow_eos:
            assert (ids != EOS).all()


def test_settings_it_does_not_cover_go_to_pytorch(native_model, monkeypatch):
    refused = SimpleNamespace(horror_choose_next=lambda *args: pytest.fail("the C sampler was called"))
    monkeypatch.setattr(native_model, "_library", refused)
    logits, context = random_case(1)
    for settings in (
        GenerationConfig(top_k=0),
        GenerationConfig(top_k=VOCAB),
        GenerationConfig(no_repeat_ngram_size=2),
    ):
        expected = choose_next_and_log_probs(logits, context, settings, torch.Generator().manual_seed(3), EOS)
        got = native_model.choose_next(logits, context, settings, torch.Generator().manual_seed(3), EOS)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_a_row_with_every_token_banned_goes_to_pytorch(native_model):
    # Only <EOS> is finite and <EOS> is banned: the C sampler has nothing to choose, PyTorch's
    # rule (choose freely rather than crash) decides.
    logits = torch.full((2, VOCAB), float("-inf"))
    logits[:, EOS] = 1.0
    context = torch.zeros((2, 1), dtype=torch.long)
    for settings in (GenerationConfig(allow_eos=False), GenerationConfig(temperature=0, allow_eos=False)):
        expected = choose_next_and_log_probs(logits, context, settings, torch.Generator().manual_seed(0), EOS)
        got = native_model.choose_next(logits, context, settings, torch.Generator().manual_seed(0), EOS)
        assert torch.equal(got[0], expected[0])


def test_a_context_token_out_of_range_is_a_native_error(native_model):
    logits, context = random_case(2, batch=1)
    context[0, 3] = VOCAB
    with pytest.raises(NativeError, match="C sampler: bad argument"):
        native_model.choose_next(logits, context, GenerationConfig(), torch.Generator().manual_seed(0), EOS)


def test_generation_on_the_c_decoder_uses_it_and_tells_the_same_stories(native_model, tiny_model_dir, monkeypatch):
    from horror.storyteller import StoryTeller

    teller = StoryTeller.load(tiny_model_dir, fallback=False)
    decoder = teller.engine
    assert isinstance(decoder, NativeGPT)
    prompt = [teller.tokenizer.bos_id, *teller.tokenizer.encode("The door was open.")]
    settings = GenerationConfig(max_new_tokens=20, seed=11, temperature=1.0, top_k=40)
    calls = []
    c_sampler = decoder.choose_next
    monkeypatch.setattr(decoder, "choose_next", lambda *args: calls.append(1) or c_sampler(*args))
    with_c = generation.generate(decoder, teller.tokenizer, prompt, settings, num_samples=3)
    steps = max(len(g.token_ids) + (g.finish_reason == "eos") for g in with_c)  # an <EOS> step adds no token
    assert len(calls) == steps
    monkeypatch.setattr(decoder, "choose_next", choose_next_and_log_probs)
    with_pytorch = generation.generate(decoder, teller.tokenizer, prompt, settings, num_samples=3)
    for c, pt in zip(with_c, with_pytorch):
        assert c.token_ids == pt.token_ids
        assert c.token_log_probs == pytest.approx(pt.token_log_probs, abs=1e-5)
