"""The fast inference mode (int8 weights on CPU), in both engines (the C decoder and PyTorch's
int8 kernels): close to fp32, the same with and without the KV cache, on by default in StoryTeller
with a way out, and never saved. Plus the sampling fast path. (The C decoder's own checks are in
test_native.py.)"""

from __future__ import annotations

import itertools
import logging
import types

import pytest
import torch
from safetensors import safe_open

from horror import generation, inference
from horror.config import GenerationConfig, model_preset
from horror.inference import Int8Linear, describe_engine, is_quantized, prepare_for_inference
from horror.model import GPT
from horror.model_folder import load_model_folder, save_model_folder
from horror.native import NativeGPT
from horror.sampling import choose_next, process_logits
from horror.storyteller import StoryTeller


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def fp32_model(request) -> GPT:
    torch.manual_seed(3)
    return GPT(model_preset("test-tiny", vocab_size=400, tie_embeddings=request.param)).eval()


@pytest.fixture(scope="module", params=[False, True], ids=["torch-int8", "c-decoder"])
def int8_model(fp32_model: GPT, request) -> GPT:
    if request.param:
        request.getfixturevalue("c_decoder")  # skips where the C decoder cannot run
    model = prepare_for_inference(fp32_model, quantize=True, native=request.param)
    assert isinstance(model, NativeGPT) == request.param
    return model


def logits_of(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(tokens)


def test_torch_int8_mode_quantizes_every_linear_including_the_head(fp32_model):
    int8_model = prepare_for_inference(fp32_model, quantize=True, native=False)
    assert is_quantized(int8_model)
    assert isinstance(int8_model.model.lm_head, Int8Linear)
    assert not any(isinstance(module, torch.nn.Linear) for module in int8_model.modules())


def test_int8_logits_are_close_to_fp32(fp32_model, int8_model):
    tokens = torch.randint(0, 400, (3, 40), generator=torch.Generator().manual_seed(0))
    expected, got = logits_of(fp32_model, tokens), logits_of(int8_model, tokens)
    # int8 rounding moves each logit by ~1% of the logits' range: far less than their spread.
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


def test_fp32_mode_is_the_same_model_exactly(fp32_model):
    served = prepare_for_inference(fp32_model, quantize=False)
    tokens = torch.randint(0, 400, (2, 30), generator=torch.Generator().manual_seed(1))
    assert not is_quantized(served)
    assert torch.equal(logits_of(served, tokens), logits_of(fp32_model, tokens))


def test_preparing_leaves_the_original_model_untouched(fp32_model, int8_model):
    assert not is_quantized(fp32_model)
    if fp32_model.config.tie_embeddings:
        assert fp32_model.lm_head.weight is fp32_model.token_embedding.weight


def test_int8_cached_logits_match_uncached(int8_model):
    tokens = torch.randint(0, 400, (2, 40), generator=torch.Generator().manual_seed(2))
    full = logits_of(int8_model, tokens)
    cache = int8_model.new_cache(2)
    with torch.inference_mode():
        pieces = [int8_model(tokens[:, :16], cache), int8_model(tokens[:, 16:20], cache)]
        pieces += [int8_model(tokens[:, i : i + 1], cache) for i in range(20, 40)]
    # PyTorch's kernels quantize activations per call from the range of what that call sees, so
    # one token at a time rounds slightly differently from a whole sequence: close, not bit-equal.
    # (The C decoder quantizes per row and is bit-equal: test_native.py.)
    assert (torch.cat(pieces, dim=1) - full).abs().max() < 0.05 * full.abs().max()


@pytest.mark.parametrize("native", [False, True], ids=["torch-int8", "c-decoder"])
def test_int8_greedy_tokens_are_identical_with_and_without_the_cache(tiny_model_dir, native, request):
    if native:
        request.getfixturevalue("c_decoder")  # skips where the C decoder cannot run
    loaded = load_model_folder(tiny_model_dir)
    model = prepare_for_inference(loaded.model, quantize=True, native=native)
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("I heard a knock.")]
    settings = GenerationConfig(temperature=0, max_new_tokens=20, allow_eos=False)
    cached = generation.generate(model, loaded.tokenizer, prompt, settings, use_cache=True)[0]
    uncached = generation.generate(model, loaded.tokenizer, prompt, settings, use_cache=False)[0]
    assert cached.token_ids == uncached.token_ids


@pytest.mark.usefixtures("c_decoder")
def test_storyteller_samples_from_the_c_decoder_and_scores_with_fp32(tiny_model_dir, monkeypatch):
    monkeypatch.delenv(inference.QUANTIZE_ENV_VAR, raising=False)
    monkeypatch.delenv(inference.NATIVE_ENV_VAR, raising=False)
    teller = StoryTeller.load(tiny_model_dir, fallback=False)
    assert isinstance(teller.engine, NativeGPT) and is_quantized(teller.engine)
    assert teller.info()["inference"] == "int8 weights, C decoder and sampler"
    assert not is_quantized(teller.model)  # exact likelihoods, and what would be saved
    assert teller.tell("The door", seed=1, max_new_tokens=8).new_tokens > 0


def test_storyteller_quantize_false_serves_fp32(tiny_model_dir):
    teller = StoryTeller.load(tiny_model_dir, fallback=False, quantize=False)
    assert not is_quantized(teller.engine)
    assert teller.info()["inference"] == "float32 weights, PyTorch"


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_horror_quantize_0_turns_int8_off(tiny_model_dir, monkeypatch, value):
    monkeypatch.setenv(inference.QUANTIZE_ENV_VAR, value)
    assert not is_quantized(StoryTeller.load(tiny_model_dir, fallback=False).engine)
    # An explicit argument wins over the environment.
    assert is_quantized(StoryTeller.load(tiny_model_dir, fallback=False, quantize=True).engine)


@pytest.mark.parametrize("value", ["0", "off"])
def test_horror_native_0_serves_pytorch_int8(tiny_model_dir, monkeypatch, value):
    monkeypatch.setenv(inference.NATIVE_ENV_VAR, value)
    teller = StoryTeller.load(tiny_model_dir, fallback=False)
    assert is_quantized(teller.engine) and not isinstance(teller.engine, NativeGPT)
    assert teller.info()["inference"] == "int8 weights, PyTorch (fbgemm)"


def test_no_c_decoder_falls_back_to_pytorch_int8_with_a_warning(fp32_model, monkeypatch, caplog):
    def unavailable(self, model, fallback_sampler):
        raise inference.NativeUnavailable("no C compiler found")

    monkeypatch.setattr(NativeGPT, "__init__", unavailable)
    with caplog.at_level(logging.WARNING, logger="horror.inference"):
        served = prepare_for_inference(fp32_model, quantize=True)
    assert isinstance(served.model.lm_head, Int8Linear)
    assert "C decoder unavailable (no C compiler found)" in caplog.text


def test_missing_int8_kernels_fall_back_to_fp32_with_a_warning(fp32_model, monkeypatch, caplog):
    def unavailable(self, linear):
        raise RuntimeError("no int8 engine")

    monkeypatch.setattr(Int8Linear, "__init__", unavailable)
    with caplog.at_level(logging.WARNING, logger="horror.inference"):
        served = prepare_for_inference(fp32_model, quantize=True, native=False)
    assert not is_quantized(served)
    assert "using fp32 weights" in caplog.text


def test_without_pytorchs_quantized_apis_the_engine_runs_fp32_and_tells_the_same_stories(
    fp32_model, tiny_tokenizer, monkeypatch, caplog
):
    # PyTorch has announced that torch.ops.quantized and quantized tensors move to torchao: hide
    # them as a build without them would, and the PyTorch engine must still serve, in fp32.
    fp32_story = generation.generate(
        prepare_for_inference(fp32_model, quantize=False),
        tiny_tokenizer,
        [tiny_tokenizer.bos_id],
        GenerationConfig(max_new_tokens=12, seed=4),
    )[0]
    monkeypatch.setattr(torch, "ops", types.SimpleNamespace())
    monkeypatch.delattr(torch, "quantize_per_channel")
    with caplog.at_level(logging.WARNING, logger="horror.inference"):
        served = prepare_for_inference(fp32_model, quantize=True, native=False)
    assert not is_quantized(served) and "using fp32 weights" in caplog.text
    assert describe_engine(served) == "float32 weights, PyTorch"
    story = generation.generate(
        served, tiny_tokenizer, [tiny_tokenizer.bos_id], GenerationConfig(max_new_tokens=12, seed=4)
    )[0]
    assert story.token_ids == fp32_story.token_ids


def test_a_quantized_teller_saves_fp32_safetensors_and_refuses_to_save_int8(tiny_model_dir, tmp_path):
    teller = StoryTeller.load(tiny_model_dir, fallback=False, quantize=True)
    save_model_folder(tmp_path / "saved", teller.model, teller.tokenizer)
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float32}
    with pytest.raises(ValueError, match="save the fp32 model"):
        save_model_folder(tmp_path / "int8", teller.engine, teller.tokenizer)


# ----- sampling fast path ----------------------------------------------------------------

SETTINGS = [
    GenerationConfig(temperature=t, top_k=k, top_p=p, min_p=m, repetition_penalty=r, allow_eos=eos)
    for t, k, p, m, r, eos in itertools.product([0.0, 0.7], [0, 5], [0.6, 1.0], [0.0, 0.2], [1.0, 1.3], [True, False])
]


@pytest.mark.parametrize(
    "settings",
    SETTINGS,
    ids=lambda s: f"t{s.temperature}-k{s.top_k}-p{s.top_p}-m{s.min_p}-r{s.repetition_penalty}-eos{s.allow_eos}",
)
def test_choose_next_samples_the_distribution_process_logits_defines(settings):
    # One row of logits repeated: the share of each token drawn must follow softmax(process_logits).
    torch.manual_seed(0)
    rows = 4000
    logits = (torch.randn(1, 12) * 2).repeat(rows, 1)
    context = torch.tensor([[0, 3, 3, 7]]).repeat(rows, 1)
    untouched = logits.clone()
    drawn = choose_next(logits, context, settings, torch.Generator().manual_seed(7), eos_id=2)
    assert torch.equal(logits, untouched)  # the caller still needs the raw logits
    processed = process_logits(logits[:1], context[:1], settings, eos_id=2)[0]
    if settings.temperature == 0:
        assert drawn.unique().tolist() == [processed.argmax().item()]
        return
    expected = processed.softmax(-1)
    observed = torch.bincount(drawn, minlength=12).float() / rows
    assert (observed[expected == 0] == 0).all()  # nothing outside the truncated set
    assert (observed - expected).abs().sum() / 2 < 0.04  # total variation distance
