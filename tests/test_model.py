"""The transformer: shapes, parameter counts, the KV cache, tied embeddings, save/load."""

from __future__ import annotations

import pytest
import torch

from horror import generation
from horror.config import GenerationConfig, model_preset
from horror.model import GPT
from horror.model_folder import load_model_folder, save_model_folder


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(1)
    return GPT(model_preset("test-tiny", vocab_size=400)).eval()


def test_logits_have_one_row_per_position_and_token(model):
    tokens = torch.randint(0, 400, (3, 10))
    assert model(tokens).shape == (3, 10, 400)
    assert model(tokens, last_only=True).shape == (3, 1, 400)


def test_last_only_matches_the_last_position_of_the_full_output(model):
    tokens = torch.randint(0, 400, (2, 12))
    with torch.no_grad():
        assert torch.allclose(model(tokens)[:, -1:], model(tokens, last_only=True), atol=1e-6)


@pytest.mark.parametrize(("preset", "millions"), [("seed-15m", 15.3), ("seed-43m", 43.2)])
def test_seed_presets_have_the_original_parameter_counts(preset, millions):
    config = model_preset(preset)
    assert config.vocab_size == 17_408
    assert round(GPT(config).num_parameters() / 1e6, 1) == millions


def test_tied_embeddings_share_one_matrix_and_count_it_once():
    untied = GPT(model_preset("test-tiny", vocab_size=400))
    tied = GPT(model_preset("test-tiny", vocab_size=400, tie_embeddings=True))
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == 400 * 32


def test_sequence_longer_than_the_context_is_refused(model):
    with pytest.raises(ValueError, match="context length 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 60, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="exceeds the context length"):
        model(torch.zeros(1, 5, dtype=torch.long), cache)


def test_cached_logits_equal_uncached_for_prefill_chunk_then_one_by_one(model):
    tokens = torch.randint(0, 400, (2, 40))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(2)
        pieces = [model(tokens[:, :16], cache), model(tokens[:, 16:20], cache)]  # prefill, then a chunk
        pieces += [model(tokens[:, i : i + 1], cache) for i in range(20, 40)]  # then token by token
    assert cache.length == 40
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_greedy_tokens_are_identical_with_and_without_the_cache(tiny_model_dir):
    loaded = load_model_folder(tiny_model_dir)
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("I heard a knock.")]
    settings = GenerationConfig(temperature=0, max_new_tokens=30, allow_eos=False)
    cached = generation.generate(loaded.model, loaded.tokenizer, prompt, settings, use_cache=True)[0]
    uncached = generation.generate(loaded.model, loaded.tokenizer, prompt, settings, use_cache=False)[0]
    assert cached.token_ids == uncached.token_ids
    assert len(cached.token_ids) == 30


def test_generation_longer_than_the_context_keeps_going(tiny_model_dir):
    loaded = load_model_folder(tiny_model_dir)
    settings = GenerationConfig(temperature=1.0, max_new_tokens=150, allow_eos=False, seed=0)
    result = generation.generate(loaded.model, loaded.tokenizer, [loaded.tokenizer.bos_id], settings)[0]
    assert len(result.token_ids) == 150  # 150 > context length 64: the cache was refilled


@pytest.mark.parametrize("tie", [False, True])
def test_save_then_load_gives_identical_logits(tmp_path, tiny_tokenizer, tie):
    torch.manual_seed(2)
    original = GPT(model_preset("test-tiny", vocab_size=tiny_tokenizer.vocab_size, tie_embeddings=tie)).eval()
    save_model_folder(tmp_path, original, tiny_tokenizer, GenerationConfig(temperature=0.6))
    loaded = load_model_folder(tmp_path)
    tokens = torch.randint(0, tiny_tokenizer.vocab_size, (2, 20))
    with torch.no_grad():
        assert torch.equal(original(tokens), loaded.model(tokens))
    assert loaded.generation_config.temperature == 0.6
    assert loaded.model.config == original.config
    assert (loaded.model.lm_head.weight is loaded.model.token_embedding.weight) == tie
