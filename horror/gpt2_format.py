"""Our model folder in GPT-2's dialect, so `transformers` and the tools built on it load it as it is.

The GPT in horror/model.py is GPT-2's architecture (learned positions, pre-LayerNorm, exact-erf
GELU, final LayerNorm, optional tied head) under nanoGPT-style names. This module translates
between the two, and does nothing else:

- config.json: ModelConfig <-> GPT2Config's fields, plus `bias`, which GPT-2 lacks;
- model.safetensors: our parameter names <-> GPT-2's, whose Conv1D layers store a weight as
  (in, out), the transpose of nn.Linear's (out, in);
- tokenizer.json, tokenizer_config.json and generation_config.json: what `transformers` reads.

GPT-2 always has biases. A model built with bias=False is written with zero biases (the same
function), and `"bias": false` tells our loader to drop them again.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, processors

from horror.config import GenerationConfig, ModelConfig
from horror.model import GPT
from horror.tokenizer import BOS, CHAIN, EOS, PAD, UNK, StoryTokenizer

MODEL_TYPE = "gpt2"
ARCHITECTURE = "GPT2LMHeadModel"
LAYER_NORM_EPSILON = 1e-5  # nn.LayerNorm's default, which horror.model uses

# config.json: GPT-2's field -> ours.
_CONFIG_FIELDS = {
    "vocab_size": "vocab_size",
    "n_positions": "context_length",
    "n_embd": "d_model",
    "n_layer": "n_layers",
    "n_head": "n_heads",
    "n_inner": "d_ff",
    "resid_pdrop": "dropout",
    "tie_word_embeddings": "tie_embeddings",
    "bias": "bias",
}
# GPT-2 options our model has one fixed value of; any other value would compute something else.
_FIXED_FIELDS = {
    "activation_function": "gelu",  # exact GELU, F.gelu's default ("gelu_new" is the tanh approximation)
    "layer_norm_epsilon": LAYER_NORM_EPSILON,
    "scale_attn_weights": True,  # scores divided by sqrt(head_dim), as scaled_dot_product_attention does
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}
# Fields transformers writes that change nothing our model computes (dropouts are training-only,
# so one value stands for all three; the token ids live in the tokenizer).
_IGNORED_FIELDS = {
    "model_type",
    "architectures",
    "transformers_version",
    "_name_or_path",
    "dtype",
    "torch_dtype",
    "use_cache",
    "initializer_range",
    "embd_pdrop",
    "attn_pdrop",
    "reorder_and_upcast_attn",
    "n_ctx",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
}
_REQUIRED_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")

# model.safetensors: (our name, GPT-2's name) inside block N, which is blocks.N / transformer.h.N.
_BLOCK_NAMES = [
    ("ln_attn.weight", "ln_1.weight"),
    ("ln_attn.bias", "ln_1.bias"),
    ("attn.qkv.weight", "attn.c_attn.weight"),  # q, k, v stacked in the same order in both
    ("attn.qkv.bias", "attn.c_attn.bias"),
    ("attn.proj.weight", "attn.c_proj.weight"),
    ("attn.proj.bias", "attn.c_proj.bias"),
    ("ln_mlp.weight", "ln_2.weight"),
    ("ln_mlp.bias", "ln_2.bias"),
    ("mlp.fc.weight", "mlp.c_fc.weight"),
    ("mlp.fc.bias", "mlp.c_fc.bias"),
    ("mlp.proj.weight", "mlp.c_proj.weight"),
    ("mlp.proj.bias", "mlp.c_proj.bias"),
]
_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers older transformers saved with GPT-2 (the causal mask), not parameters.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")

# generation_config.json: keys transformers reads that our GenerationConfig does not have.
TRANSFORMERS_GENERATION_KEYS = frozenset(
    {"do_sample", "bos_token_id", "eos_token_id", "pad_token_id", "transformers_version", "_from_model_config"}
)


def is_gpt2_config(data: dict[str, Any]) -> bool:
    """True for a config.json in GPT-2's format (False for the older horror-gpt one)."""
    return isinstance(data, dict) and data.get("model_type") == MODEL_TYPE


def to_gpt2_config(config: ModelConfig, tokenizer: StoryTokenizer) -> dict[str, Any]:
    """config.json as `transformers.GPT2Config` reads it, with `bias` for our loader."""
    return {
        "model_type": MODEL_TYPE,
        "architectures": [ARCHITECTURE],
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": config.d_ff,
        **_FIXED_FIELDS,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
        "bias": config.bias,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
    }


def from_gpt2_config(data: dict[str, Any]) -> ModelConfig:
    """ModelConfig from a GPT-2 config.json; ValueError names a field we do not know or support."""
    unknown = sorted(set(data) - set(_CONFIG_FIELDS) - set(_FIXED_FIELDS) - _IGNORED_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown model config field(s) {unknown} in a GPT-2 config; "
            f"known fields are {sorted(set(_CONFIG_FIELDS) | set(_FIXED_FIELDS))}"
        )
    missing = [name for name in _REQUIRED_FIELDS if name not in data]
    if missing:
        raise ValueError(f"GPT-2 config lacks {missing}")
    for name, value in _FIXED_FIELDS.items():
        if data.get(name, value) != value:
            raise ValueError(f"{name}={data[name]!r} is not supported: this model computes {name}={value!r}")
    fields = {ours: data[theirs] for theirs, ours in _CONFIG_FIELDS.items() if theirs in data}
    if fields.get("d_ff") is None:
        fields["d_ff"] = 4 * data["n_embd"]  # GPT-2's meaning of n_inner: null
    fields.setdefault("tie_embeddings", True)  # GPT2Config's defaults for fields a folder leaves out
    fields.setdefault("dropout", 0.1)
    return ModelConfig(**fields)


def _name_pairs(config: ModelConfig) -> list[tuple[str, str]]:
    """(our name, GPT-2's name) for every tensor in a GPT-2 file, biases included."""
    pairs = [
        ("token_embedding.weight", "transformer.wte.weight"),
        ("position_embedding.weight", "transformer.wpe.weight"),
    ]
    for layer in range(config.n_layers):
        pairs += [(f"blocks.{layer}.{ours}", f"transformer.h.{layer}.{theirs}") for ours, theirs in _BLOCK_NAMES]
    pairs += [("ln_final.weight", "transformer.ln_f.weight"), ("ln_final.bias", "transformer.ln_f.bias")]
    if not config.tie_embeddings:  # tied: transformers takes the head from wte, as we do
        pairs.append(("lm_head.weight", "lm_head.weight"))
    return pairs


def to_gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under GPT-2's names and layout, ready for safetensors."""
    ours = model.state_dict()
    tensors = {}
    for our_name, gpt2_name in _name_pairs(model.config):
        tensor = ours.get(our_name)
        if tensor is None:  # bias=False: a zero bias computes the same function
            weight = ours[our_name.removesuffix("bias") + "weight"]
            tensor = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        if gpt2_name.endswith(_CONV1D_WEIGHTS):
            tensor = tensor.t()
        tensors[gpt2_name] = tensor.detach().cpu().contiguous()
    return tensors


def from_gpt2_state_dict(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """A state_dict for `GPT(config)` from GPT-2-named tensors; ValueError says what does not fit."""
    pairs = _name_pairs(config)
    expected = {gpt2_name for _, gpt2_name in pairs}
    missing = sorted(expected - set(tensors))
    allowed_extra = {"lm_head.weight"} if config.tie_embeddings else set()  # a tied head some tools write out
    unexpected = sorted(name for name in set(tensors) - expected - allowed_extra if not name.endswith(_BUFFER_SUFFIXES))
    problems = [
        f"{what} tensors {names[:3]}{' and more' if len(names) > 3 else ''}"
        for what, names in (("missing", missing), ("unexpected", unexpected))
        if names
    ]
    if problems:
        raise ValueError("; ".join(problems))
    state = {}
    for our_name, gpt2_name in pairs:
        tensor = tensors[gpt2_name]
        if gpt2_name.endswith(_CONV1D_WEIGHTS):
            if tensor.dim() != 2:
                raise ValueError(f"{gpt2_name} has shape {tuple(tensor.shape)}, expected a matrix")
            tensor = tensor.t()
        if not config.bias and our_name.endswith(".bias"):
            if torch.any(tensor != 0):
                raise ValueError(f"{gpt2_name} is not zero but config.json says bias: false")
            continue
        state[our_name] = tensor
    if config.tie_embeddings:
        state["lm_head.weight"] = state["token_embedding.weight"]
    return state


def tokenizer_for_transformers(tokenizer: StoryTokenizer) -> Tokenizer:
    """A copy of the tokenizer whose plain encode (transformers' add_special_tokens=True) starts with
    <BOS>, as every training story did. Our own encoding never adds special tokens, so it is unchanged;
    the copy leaves the training tokenizer (and the token caches keyed by it) as it was."""
    copy = Tokenizer.from_str(tokenizer.tokenizer.to_str())
    if copy.post_processor is None:
        copy.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.bos_id)]
        )
    return copy


def tokenizer_config(tokenizer: StoryTokenizer, context_length: int) -> dict[str, Any]:
    """tokenizer_config.json: what `AutoTokenizer` needs beside tokenizer.json."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "model_max_length": context_length,
        # transformers' clean-up joins " ." and " 's"; our decoder keeps the text exactly as written.
        "clean_up_tokenization_spaces": False,
    }
    if tokenizer.chain_id is not None:
        config["additional_special_tokens"] = [CHAIN]
    return config


def to_transformers_generation_config(settings: GenerationConfig, tokenizer: StoryTokenizer) -> dict[str, Any]:
    """generation_config.json that both we and `transformers.GenerationConfig` read.

    transformers samples only with do_sample; our temperature 0 (greedy) is its do_sample false.
    Our own keys (seed, stop_after_sentences, allow_eos, best_of) it keeps and ignores."""
    return {
        **settings.to_dict(),
        "do_sample": settings.temperature > 0,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
    }


def from_transformers_generation_config(data: dict[str, Any]) -> GenerationConfig:
    """Our GenerationConfig from generation_config.json, old or new (transformers' keys set aside)."""
    if isinstance(data, dict):
        data = {key: value for key, value in data.items() if key not in TRANSFORMERS_GENERATION_KEYS}
    return GenerationConfig.from_dict(data)
