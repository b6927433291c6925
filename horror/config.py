"""Configuration as data: the model's shape and the default sampling settings.

Both are frozen dataclasses that round-trip through JSON files stored next to the weights
(`config.json`, `generation_config.json`), the layout a Hugging Face Hub user expects.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from horror.errors import UserError

T = TypeVar("T")

# Bounds on every size a user controls (UI sliders, API calls, CLI flags).
MAX_NEW_TOKENS_LIMIT = 512
MAX_BATCH_SIZE = 16
MAX_TOP_K = 100_000
MAX_SEED = 2**63 - 1
MAX_BEST_OF = 8  # stories sampled to keep the surest: bounded, as each costs a full generation
# Floors for settings whose tiny values overflow float32 sampling (logits / 1e-40 is inf) while
# meaning nothing a person could see: below them, sampling is greedy in all but name.
MIN_TEMPERATURE = 0.01
MIN_TOP_P = 0.001
MIN_REPETITION_PENALTY = 0.01


def reject_unknown_fields(cls: type, data: dict[str, Any], what: str) -> None:
    """A clear ValueError if `data` has keys that are not fields of the dataclass `cls`."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; known fields are {sorted(known)}")


def _from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """Build a dataclass from a dict, refusing unknown fields with a clear message."""
    if not isinstance(data, dict):
        raise ValueError(f"a {what} must be a JSON object, got {type(data).__name__}")
    reject_unknown_fields(cls, data, what)
    return cls(**data)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder-only transformer."""

    vocab_size: int = 17_408
    context_length: int = 256
    d_model: int = 256
    n_layers: int = 8
    n_heads: int = 8
    d_ff: int = 1024
    dropout: float = 0.15
    tie_embeddings: bool = False  # share the token embedding with the LM head (saves vocab*d params)
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        dropout_is_number = isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
        if not dropout_is_number or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("tie_embeddings", "bias"):
            if not isinstance(getattr(self, name), bool):  # "false" in a JSON file is truthy
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "horror-gpt", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "model_type"}
        return _from_dict(cls, data, "model config")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# Presets. seed-15m / seed-43m reproduce the original project's models (15.3M / 43.2M
# parameters with its ~17.4K vocabulary and an untied head); the smaller ones train on a CPU.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "seed-15m": ModelConfig(d_model=256, n_layers=8, n_heads=8, d_ff=1024, dropout=0.15),
    "seed-43m": ModelConfig(d_model=512, n_layers=8, n_heads=8, d_ff=2048, dropout=0.2),
    "cpu-small": ModelConfig(
        vocab_size=8192, d_model=256, n_layers=6, n_heads=8, d_ff=1024, dropout=0.1, tie_embeddings=True
    ),
    "cpu-tiny": ModelConfig(
        vocab_size=8192, d_model=192, n_layers=4, n_heads=6, d_ff=768, dropout=0.1, tie_embeddings=True
    ),
    "cpu-micro": ModelConfig(
        vocab_size=8192, d_model=128, n_layers=4, n_heads=4, d_ff=512, dropout=0.1, tie_embeddings=True
    ),
    "test-tiny": ModelConfig(
        vocab_size=512, context_length=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0
    ),
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name, optionally with some fields replaced (e.g. the real vocab size)."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    return dataclasses.replace(MODEL_PRESETS[name], **overrides)


def _check_number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise UserError(f"{name} must be in [{low}, {high}], got {value!r}")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise UserError(f"{name} must be between {low} and {high}, got {value!r}")


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings. Defaults are the original project's (temperature 0.4, top-k 30, ...)."""

    temperature: float = 0.4  # 0 means greedy
    top_k: int = 30  # 0 disables
    top_p: float = 0.9  # 1.0 disables
    min_p: float = 0.0  # 0 disables
    repetition_penalty: float = 1.2  # 1.0 disables
    no_repeat_ngram_size: int = 0  # 0 disables
    max_new_tokens: int = 55
    seed: int | None = None
    stop_after_sentences: int | None = None  # stop once this many new sentences are complete
    allow_eos: bool = True  # False keeps writing past <EOS> (a story chain wants one more sentence)
    # Sample this many stories and keep the one the model is surest of (the app's "Best of N"); a
    # model's generation_config.json sets what its blind read found best. Streams and story-chain
    # sentences are always one sample.
    best_of: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        _check_number("temperature", self.temperature, 0.0, 5.0)
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise UserError(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {self.temperature!r}")
        _check_int("top_k", self.top_k, 0, MAX_TOP_K)
        _check_number("top_p", self.top_p, MIN_TOP_P, 1.0)
        _check_number("min_p", self.min_p, 0.0, 1.0)
        _check_number("repetition_penalty", self.repetition_penalty, MIN_REPETITION_PENALTY, 10.0)
        _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, 16)
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, MAX_SEED)
        if self.stop_after_sentences is not None:
            _check_int("stop_after_sentences", self.stop_after_sentences, 1, 64)
        _check_int("best_of", self.best_of, 1, MAX_BEST_OF)
        if not isinstance(self.allow_eos, bool):
            raise UserError(f"allow_eos must be true or false, got {self.allow_eos!r}")
        # Normalise integral floats that came from JSON or sliders (e.g. top_k=30.0).
        for name in ("top_k", "no_repeat_ngram_size", "max_new_tokens", "seed", "stop_after_sentences", "best_of"):
            value = getattr(self, name)
            if isinstance(value, float):
                object.__setattr__(self, name, int(value))

    def replace(self, **changes: Any) -> GenerationConfig:
        """A copy with some settings changed; None values are ignored (keep the default)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise UserError(f"unknown generation setting(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        return _from_dict(cls, data, "generation config")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GenerationConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
