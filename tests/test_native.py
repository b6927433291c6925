"""The C decoder (horror/csrc/decoder.c via horror/native.py): the same maths as the PyTorch model
with the same int8 rounding, bit-equal with and without the cache and for any thread count,
re-entrant, strict about bad input, and clear about why it cannot be built."""

from __future__ import annotations

import copy
import platform
import shutil
import threading

import pytest
import torch
import torch.nn as nn

from horror import generation, native
from horror.config import GenerationConfig, model_preset
from horror.model import GPT
from horror.native import NativeGPT, NativeUnavailable, quantize_rows
from horror.sampling import choose_next_and_log_probs

SHAPES = {
    # name: preset fields. "odd" has dimensions that are not multiples of the 32-byte vectors
    # (d_model 40, d_ff 72) and a vocabulary that is not a multiple of 4 rows: the tail paths.
    "tiny": dict(vocab_size=400),
    "tiny-tied-no-bias": dict(vocab_size=400, tie_embeddings=True, bias=False),
    "odd": dict(vocab_size=401, d_model=40, n_heads=4, d_ff=72),
    "threaded": dict(vocab_size=1000, d_model=128, n_heads=4, d_ff=512),  # big enough to split
    "long-window": dict(vocab_size=1000, d_model=128, n_heads=4, d_ff=512, context_length=128),
}


def make_model(shape: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(model_preset("test-tiny", **SHAPES[shape])).eval()
    with torch.no_grad():  # LayerNorm weights and biases away from 1 and 0, so mistakes show
        for name, param in model.named_parameters():
            if name.endswith(("ln_attn.weight", "ln_mlp.weight", "ln_final.weight")):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif param.dim() == 1:
                param.copy_(0.1 * torch.randn_like(param))
    return model


class SameRoundingLinear(nn.Module):
    """What the C decoder computes for a Linear, in PyTorch: int8 weights per output row, each
    input row rounded to int8 by its own scale, then an exact integer product."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.q, self.scale = quantize_rows(linear.weight)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        largest = x.abs().amax(dim=-1, keepdim=True)
        x_q = torch.round(x * torch.where(largest > 0, 127 / largest, 0)).clamp(-127, 127)
        out = (x_q.double() @ self.q.double().T).float() * (largest / 127) * self.scale
        return out if self.bias is None else out + self.bias


def same_rounding_reference(model: GPT) -> GPT:
    reference = copy.deepcopy(model)
    for module in list(reference.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, SameRoundingLinear(child))
    return reference


def logits(model: nn.Module, tokens: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.inference_mode():
        return model(tokens, **kwargs)


def random_tokens(vocab_size: int, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def test_the_c_decoder_builds_wherever_it_should():
    # Guards the skips below: on x86-64 with AVX2 and a C compiler (CI), it must build and load.
    prerequisites = (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        and (shutil.which("cc") or shutil.which("gcc"))
    )
    if not prerequisites:
        pytest.skip("no x86-64 + AVX2 + C compiler here")
    try:
        native.load_library()
    except NativeUnavailable as error:
        pytest.fail(f"the C decoder should build and load here: {error}")


@pytest.mark.usefixtures("c_decoder")
@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_pytorch_with_the_same_int8_rounding(shape):
    model = make_model(shape)
    tokens = random_tokens(model.config.vocab_size, (3, 37))
    expected = logits(same_rounding_reference(model), tokens)
    got = logits(NativeGPT(model, choose_next_and_log_probs), tokens)
    assert got.shape == expected.shape == (3, 37, model.config.vocab_size)
    # Only float summation order differs, and now and then that tips an activation to round the
    # other way (then that position moves by a few thousandths): nearly every position agrees to
    # float precision.
    difference = (got - expected).abs()
    assert (difference < 1e-5).all(dim=-1).float().mean() > 0.95
    assert difference.max() < 0.01 * expected.abs().max()
    # And int8 stays close to the fp32 model itself.
    fp32 = logits(model, tokens)
    assert (got - fp32).abs().max() < 0.05 * fp32.abs().max()
    assert (got.argmax(-1) == fp32.argmax(-1)).float().mean() > 0.9


@pytest.mark.usefixtures("c_decoder")
def test_last_only_gives_the_last_position():
    model = make_model("tiny")
    decoder, tokens = NativeGPT(model, choose_next_and_log_probs), random_tokens(400, (2, 20))
    assert torch.equal(logits(decoder, tokens, last_only=True), logits(decoder, tokens)[:, -1:])


@pytest.mark.usefixtures("c_decoder")
@pytest.mark.parametrize("shape", ["tiny", "odd"])
def test_cached_steps_equal_the_whole_sequence_bit_for_bit(shape):
    model = make_model(shape)
    decoder = NativeGPT(model, choose_next_and_log_probs)
    tokens = random_tokens(model.config.vocab_size, (2, 40), seed=1)
    cache = decoder.new_cache(2)
    with torch.inference_mode():
        pieces = [decoder(tokens[:, :16], cache), decoder(tokens[:, 16:20], cache)]
        pieces += [decoder(tokens[:, i : i + 1], cache) for i in range(20, 40)]
    assert cache.length == 40
    assert torch.equal(torch.cat(pieces, dim=1), logits(decoder, tokens))


@pytest.mark.usefixtures("c_decoder")
def test_batch_rows_do_not_affect_each_other():
    decoder = NativeGPT(make_model("tiny"), choose_next_and_log_probs)
    tokens = random_tokens(400, (4, 25), seed=2)
    together = logits(decoder, tokens)
    for row in range(4):
        assert torch.equal(together[row], logits(decoder, tokens[row : row + 1])[0])


@pytest.mark.usefixtures("c_decoder")
def test_the_thread_count_does_not_change_any_bit():
    decoder = NativeGPT(make_model("threaded"), choose_next_and_log_probs)
    tokens = random_tokens(1000, (2, 30), seed=3)
    one = logits(decoder, tokens, threads=1)
    assert torch.equal(one, logits(decoder, tokens, threads=2))
    assert torch.equal(one, logits(decoder, tokens, threads=3))  # more threads than rows per split is fine


@pytest.mark.usefixtures("c_decoder")
def test_decoding_far_into_the_window_splits_attention_without_changing_any_bit():
    # At d_model 128, attention for one new token is split between threads from position 64 on.
    decoder = NativeGPT(make_model("long-window"), choose_next_and_log_probs)
    tokens = random_tokens(1000, (1, 100), seed=4)
    steps = {}
    for threads in (1, 2):
        cache = decoder.new_cache(1)
        with torch.inference_mode():
            pieces = [decoder(tokens[:, :60], cache, threads=threads)]
            pieces += [decoder(tokens[:, i : i + 1], cache, threads=threads) for i in range(60, 100)]
        steps[threads] = torch.cat(pieces, dim=1)
    assert torch.equal(steps[1], steps[2])
    assert torch.equal(steps[2], logits(decoder, tokens))


@pytest.mark.usefixtures("c_decoder")
def test_the_decoder_keeps_its_own_copy_of_the_weights():
    model = make_model("tiny")
    decoder, tokens = NativeGPT(model, choose_next_and_log_probs), random_tokens(400, (1, 10))
    before = logits(decoder, tokens)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    del model
    assert torch.equal(before, logits(decoder, tokens))


@pytest.mark.usefixtures("c_decoder")
def test_generation_runs_on_the_decoder_and_a_seed_reproduces(tiny_model_dir):
    from horror.model_folder import load_model_folder

    loaded = load_model_folder(tiny_model_dir)
    decoder = NativeGPT(loaded.model, choose_next_and_log_probs)
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("The door")]
    settings = GenerationConfig(temperature=0.8, top_k=20, max_new_tokens=30, allow_eos=False, seed=5)
    first = generation.generate(decoder, loaded.tokenizer, prompt, settings, num_samples=3)
    again = generation.generate(decoder, loaded.tokenizer, prompt, settings, num_samples=3)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert all(len(g.token_ids) == 30 for g in first)


@pytest.mark.usefixtures("c_decoder")
def test_concurrent_calls_give_the_same_answers_as_one_at_a_time(tiny_model_dir):
    from horror.model_folder import load_model_folder

    loaded = load_model_folder(tiny_model_dir)
    decoder = NativeGPT(loaded.model, choose_next_and_log_probs)
    prompt = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("My sister")]

    def story(seed: int) -> list[int]:
        settings = GenerationConfig(temperature=1.0, max_new_tokens=40, allow_eos=False, seed=seed)
        return generation.generate(decoder, loaded.tokenizer, prompt, settings)[0].token_ids

    expected = {seed: story(seed) for seed in range(8)}
    results: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda s=seed: results.__setitem__(s, story(s))) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == expected


@pytest.mark.usefixtures("c_decoder")
def test_bad_input_is_a_clear_error_and_never_the_persons():
    # A token id the C code refuses is a fault of this program (generation never sends one), so
    # it is a NativeError, not the ValueError/UserError channel the app shows to a person.
    decoder = NativeGPT(make_model("tiny"), choose_next_and_log_probs)
    context = decoder.config.context_length
    with pytest.raises(native.NativeError, match="token id"):
        logits(decoder, torch.tensor([[1, 400]]))
    with pytest.raises(native.NativeError, match="token id"):
        logits(decoder, torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="exceeds the context length"):
        logits(decoder, torch.zeros(1, context + 1, dtype=torch.long))
    cache = decoder.new_cache(1)
    logits(decoder, torch.zeros(1, context, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="exceeds the context length"):
        logits(decoder, torch.zeros(1, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="a row per batch row"):
        logits(decoder, torch.zeros(2, 3, dtype=torch.long), cache=decoder.new_cache(1))
    # A rejected call leaves the cache as it was.
    cache = decoder.new_cache(1)
    with pytest.raises(native.NativeError):
        logits(decoder, torch.tensor([[5, 999]]), cache=cache)
    assert cache.length == 0


def test_a_missing_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(native, "_check_cpu", lambda: None)
    with pytest.raises(NativeUnavailable, match="cannot build it with .*no-such-cc"):
        native.build(tmp_path / "cache")


def test_a_compile_error_is_reported_with_the_compiler_message(tmp_path, monkeypatch):
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    monkeypatch.setattr(native, "_check_cpu", lambda: None)
    broken = tmp_path / "broken.c"
    broken.write_text("int horror_forward( {\n")
    with pytest.raises(NativeUnavailable, match="compiling broken.c .* failed: .*error"):
        native.build(tmp_path / "cache", sources=(broken,))
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-built left to load


def test_other_cpus_are_refused_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(NativeUnavailable, match="x86-64 CPU, this is aarch64"):
        native.build(tmp_path)


@pytest.mark.usefixtures("c_decoder")
def test_a_build_is_cached_and_reused(tmp_path):
    library = native.build(tmp_path)
    built_at = library.stat().st_mtime_ns
    assert native.build(tmp_path) == library
    assert library.stat().st_mtime_ns == built_at
    assert [path.name for path in tmp_path.iterdir()] == [library.name]
