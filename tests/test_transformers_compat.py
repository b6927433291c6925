"""One model folder every tool loads: what save_model_folder writes is GPT-2's format, so
`transformers` (AutoModelForCausalLM, AutoTokenizer, pipeline) computes the same logits and writes
the same greedy story as our GPT; folders in the older horror-gpt format still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from horror import generation
from horror.cli import main
from horror.config import GenerationConfig, model_preset
from horror.hub import BUNDLED_MODEL_DIR
from horror.model import GPT
from horror.model_folder import (
    ModelLoadError,
    convert_model_folder,
    load_model_folder,
    save_model_folder,
    update_generation_config,
)
from horror.native import NativeGPT
from horror.sampling import choose_next_and_log_probs
from horror.tokenizer import StoryTokenizer

transformers = pytest.importorskip("transformers")
transformers.utils.logging.disable_progress_bar()

# fp32 on both sides, the same operations in the same order: the logits agree far inside this.
LOGIT_TOLERANCE = 1e-5
GREEDY = GenerationConfig(temperature=0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=30)
SHAPES = {
    "tiny-untied": dict(preset="test-tiny"),
    "tiny-tied": dict(preset="test-tiny", tie_embeddings=True),
    "tiny-tied-no-bias": dict(preset="test-tiny", tie_embeddings=True, bias=False),
    # The seed presets' shape (untied head, 8 layers, d_model 256) with the test tokenizer's vocabulary.
    "seed-15m-shape": dict(preset="seed-15m"),
}


def make_model(shape: str, vocab_size: int, seed: int = 0) -> GPT:
    """A random model whose logits are far from uniform, so a wrong weight shows and greedy has no ties."""
    fields = dict(SHAPES[shape])
    torch.manual_seed(seed)
    model = GPT(model_preset(fields.pop("preset"), vocab_size=vocab_size, dropout=0.0, **fields)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("ln_attn.weight", "ln_mlp.weight", "ln_final.weight")):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            elif param.dim() == 1:
                param.copy_(0.1 * torch.randn_like(param))
            else:
                param.mul_(5)
    return model


@pytest.fixture(scope="module", params=list(SHAPES))
def saved(request, tmp_path_factory, tiny_tokenizer) -> tuple[GPT, Path]:
    model = make_model(request.param, tiny_tokenizer.vocab_size)
    folder = save_model_folder(tmp_path_factory.mktemp(request.param), model, tiny_tokenizer, GenerationConfig())
    return model, folder


def logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(tokens)
    return getattr(out, "logits", out)


def test_transformers_computes_our_logits(saved):
    model, folder = saved
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(theirs).__name__ == "GPT2LMHeadModel" and theirs.dtype == torch.float32
    tokens = torch.randint(
        0, model.config.vocab_size, (2, model.config.context_length), generator=torch.Generator().manual_seed(1)
    )
    difference = (logits(theirs, tokens) - logits(model, tokens)).abs().max().item()
    assert difference < LOGIT_TOLERANCE, difference


def test_our_loader_reads_the_same_weights_back(saved):
    model, folder = saved
    loaded = load_model_folder(folder).model
    assert loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.token_embedding.weight) == model.config.tie_embeddings
    assert (loaded.blocks[0].attn.qkv.bias is None) == (not model.config.bias)
    tokens = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    assert torch.equal(logits(loaded, tokens), logits(model, tokens))


def test_the_greedy_story_is_the_same_through_both(saved, tiny_tokenizer):
    model, folder = saved
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    prompt = "My sister whispered at the door every night."
    prompt_ids = their_tokenizer(prompt, return_tensors="pt").input_ids
    assert prompt_ids[0].tolist() == [tiny_tokenizer.bos_id, *tiny_tokenizer.encode(prompt)]

    ours = generation.generate(model, tiny_tokenizer, prompt_ids[0].tolist(), GREEDY)[0]
    with torch.inference_mode():
        output = theirs.generate(
            prompt_ids, do_sample=False, max_new_tokens=GREEDY.max_new_tokens, repetition_penalty=1.0
        )
    new_ids = output[0, prompt_ids.shape[1] :].tolist()
    if new_ids[-1:] == [tiny_tokenizer.eos_id]:  # ours reports the <EOS> stop as finish_reason
        new_ids = new_ids[:-1]
    assert new_ids == ours.token_ids
    assert their_tokenizer.decode(new_ids, skip_special_tokens=True) == tiny_tokenizer.decode(ours.token_ids)


def test_the_pipeline_writes_the_greedy_story(saved, tiny_tokenizer):
    model, folder = saved
    prompt = "The nurse smiled"
    prompt_ids = [tiny_tokenizer.bos_id, *tiny_tokenizer.encode(prompt)]
    ours = generation.generate(model, tiny_tokenizer, prompt_ids, GREEDY)[0]
    generate = transformers.pipeline("text-generation", model=str(folder))
    result = generate(prompt, do_sample=False, max_new_tokens=GREEDY.max_new_tokens, repetition_penalty=1.0)
    # (ours.text drops the half character a length stop can leave; a random model writes many)
    assert result[0]["generated_text"] == prompt + tiny_tokenizer.decode(ours.token_ids)


def test_auto_tokenizer_declares_our_special_tokens(tiny_model_dir, tiny_tokenizer):
    their_tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    assert (their_tokenizer.bos_token, their_tokenizer.eos_token) == ("<BOS>", "<EOS>")
    assert (their_tokenizer.pad_token, their_tokenizer.unk_token) == ("<PAD>", "<UNK>")
    assert their_tokenizer.pad_token_id == tiny_tokenizer.pad_id
    assert "<CHAIN>" in their_tokenizer.all_special_tokens
    text = "She said “don’t” — naïve café 😀. It's late."
    ids = their_tokenizer(text).input_ids
    assert ids == [tiny_tokenizer.bos_id, *tiny_tokenizer.encode(text)]
    assert their_tokenizer.decode(ids, skip_special_tokens=True) == tiny_tokenizer.decode(ids)


def test_the_generation_config_gives_transformers_our_sampling(tiny_model_dir):
    settings = transformers.GenerationConfig.from_pretrained(tiny_model_dir)
    ours = load_model_folder(tiny_model_dir).generation_config
    assert settings.do_sample is True and settings.max_new_tokens == ours.max_new_tokens == 20
    assert (settings.temperature, settings.top_k, settings.top_p) == (ours.temperature, ours.top_k, ours.top_p)
    assert (settings.eos_token_id, settings.pad_token_id) == (2, 0)


def test_changed_sampling_defaults_reach_both_readers(tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    update_generation_config(folder, temperature=0, top_k=5, best_of=3)
    settings = transformers.GenerationConfig.from_pretrained(folder)
    assert settings.do_sample is False and settings.top_k == 5 and settings.eos_token_id == 2
    ours = load_model_folder(folder).generation_config
    assert ours.temperature == 0 and ours.best_of == 3  # transformers keeps our best_of and ignores it
    with pytest.raises(ValueError, match="top_p must be"):
        update_generation_config(folder, top_p=1.5)


def test_a_folder_transformers_saves_loads_with_ours(saved, tmp_path):
    model, folder = saved
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder)
    theirs.save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path)
    loaded = load_model_folder(tmp_path)
    tokens = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(3))
    assert loaded.model.config == model.config
    assert torch.equal(logits(loaded.model, tokens), logits(model, tokens))


def test_a_bias_false_model_is_written_with_zero_biases_that_must_stay_zero(tmp_path, tiny_tokenizer):
    model = make_model("tiny-tied-no-bias", tiny_tokenizer.vocab_size)
    folder = save_model_folder(tmp_path / "model", model, tiny_tokenizer)
    tensors = load_file(folder / "model.safetensors")
    assert not tensors["transformer.h.0.attn.c_attn.bias"].any() and not tensors["transformer.ln_f.bias"].any()
    tensors["transformer.h.1.mlp.c_fc.bias"] += 0.5  # e.g. fine-tuned with transformers: no longer our model
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="c_fc.bias is not zero but config.json says bias: false"):
        load_model_folder(folder)


@pytest.mark.parametrize(
    ("field", "value"),
    [("activation_function", "gelu_new"), ("layer_norm_epsilon", 1e-6), ("scale_attn_by_inverse_layer_idx", True)],
)
def test_gpt2_options_our_model_does_not_compute_are_refused(tmp_path, tiny_model_dir, field, value):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ModelLoadError, match=f"{field}=.* is not supported"):
        load_model_folder(folder)


# ----- the older format (model_type horror-gpt, our names) --------------------------------------


def save_old_format_folder(folder: Path, model: GPT, tokenizer: StoryTokenizer) -> Path:
    """A folder as save_model_folder wrote it before the GPT-2 format (Hub repos and caches hold these)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "horror-gpt", **model.config.__dict__}))
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(folder / "tokenizer.json")
    GenerationConfig(temperature=0.7).save(folder / "generation_config.json")
    (folder / "README.md").write_text("# an old card\n")
    (folder / "card.json").write_text('{"name": "old"}')
    return folder


@pytest.mark.parametrize("shape", ["tiny-untied", "tiny-tied-no-bias"])
def test_an_old_format_folder_still_loads_and_converts(tmp_path, tiny_tokenizer, shape):
    model = make_model(shape, tiny_tokenizer.vocab_size)
    old = save_old_format_folder(tmp_path / "old", model, tiny_tokenizer)
    tokens = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(4))
    loaded = load_model_folder(old)
    assert loaded.generation_config.temperature == 0.7 and loaded.card_metadata == {"name": "old"}
    assert torch.equal(logits(loaded.model, tokens), logits(model, tokens))

    new = convert_model_folder(old, tmp_path / "new")
    assert json.loads((new / "config.json").read_text())["model_type"] == "gpt2"
    assert (new / "README.md").read_text() == "# an old card\n" and (new / "card.json").is_file()
    assert load_model_folder(new).generation_config.temperature == 0.7
    assert torch.equal(logits(load_model_folder(new).model, tokens), logits(model, tokens))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(new).eval()
    assert (logits(theirs, tokens) - logits(model, tokens)).abs().max() < LOGIT_TOLERANCE

    assert main(["convert", str(old)]) == 0  # in place, from the command line
    assert json.loads((old / "config.json").read_text())["model_type"] == "gpt2"
    assert torch.equal(logits(load_model_folder(old).model, tokens), logits(model, tokens))


# ----- the bundled model and the C decoder ------------------------------------------------------


def test_the_bundled_model_loads_in_transformers_with_our_logits():
    ours = load_model_folder(BUNDLED_MODEL_DIR)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(BUNDLED_MODEL_DIR).eval()
    prompt = [ours.tokenizer.bos_id, *ours.tokenizer.encode("I heard my mother call my name from the kitchen.")]
    tokens = torch.tensor([prompt])
    assert (logits(theirs, tokens) - logits(ours.model, tokens)).abs().max() < LOGIT_TOLERANCE


@pytest.mark.usefixtures("c_decoder")
def test_the_c_decoder_runs_a_model_loaded_from_the_gpt2_format(tmp_path, tiny_tokenizer):
    model = make_model("tiny-tied-no-bias", tiny_tokenizer.vocab_size)
    loaded = load_model_folder(save_model_folder(tmp_path, model, tiny_tokenizer))
    tokens = torch.randint(0, model.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(5))
    from_folder, from_model = (
        NativeGPT(loaded.model, choose_next_and_log_probs),
        NativeGPT(model, choose_next_and_log_probs),
    )
    assert torch.equal(logits(from_folder, tokens), logits(from_model, tokens))
    prompt = [tiny_tokenizer.bos_id, *tiny_tokenizer.encode("The door")]
    settings = GenerationConfig(temperature=0.8, max_new_tokens=20, allow_eos=False, seed=3)
    written = generation.generate(from_folder, tiny_tokenizer, prompt, settings)[0]
    assert written.token_ids == generation.generate(from_model, tiny_tokenizer, prompt, settings)[0].token_ids
