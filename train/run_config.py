"""The training run's configuration: one JSON file is the single source of truth, and every
field (nested ones as `--pretrain.lr`) can be overridden on the command line."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class PhaseConfig:
    """One training phase (pretrain or fine-tune)."""

    epochs: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    batch_size: int = 32  # sequences per optimizer step per process, before accumulation
    grad_accum: int = 1
    grad_clip: float = 1.0
    dropout: float | None = None  # None keeps the model config's dropout
    patience: int = 3  # evaluations without improvement before stopping early (0 = never)
    eval_every: int = 200  # optimizer steps; an evaluation also ends every epoch
    max_steps: int = 0  # 0 = no limit (for smoke tests and quick runs)


@dataclass
class Source:
    """A corpus: a local file (.txt, .txt.xz, .jsonl) or a Hub dataset id, with a mixing weight."""

    path: str
    weight: float = 1.0
    format: str = "auto"  # auto | stories (split on <|endoftext|>) | lines | jsonl
    data_files: str | None = None  # for Hub datasets, e.g. TinyStoriesV2-GPT4-train.txt
    fix_mojibake: bool = False


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = ""  # default runs/<name>
    seed: int = 1337
    model_preset: str = "cpu-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # tokenizer
    tokenizer_from: str = ""  # a model folder whose tokenizer.json to reuse; else train one
    vocab_size: int = 20_000
    min_frequency: int = 3
    tokenizer_stories_per_corpus: int = 50_000
    # data
    pretrain_sources: list[Source] = field(default_factory=list)
    finetune_sources: list[Source] = field(default_factory=list)
    finetune_min_tokens: int = 12  # counts <BOS> and <EOS>
    finetune_max_tokens: int = 96  # our stories run to ~50 words: keep nearly all of them
    val_fraction: float = 0.05
    cache_dir: str = ".cache/tokenized"
    # phases
    init_from: str = ""  # a model folder to start from instead of random weights
    skip_pretrain: bool = False
    skip_finetune: bool = False
    pretrain: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=10, lr=3e-4, weight_decay=0.1))
    finetune: PhaseConfig = field(
        default_factory=lambda: PhaseConfig(epochs=20, lr=2e-5, weight_decay=0.1, warmup_steps=20)
    )
    # machinery
    mixed_precision: str = "auto"  # auto (bf16 where the hardware has it) | no | bf16 | fp16
    compile: bool = False
    num_threads: int = 0  # CPU threads per process; 0 = leave torch's default
    checkpoint_every: int = 200  # optimizer steps
    sample_prompts: list[str] = field(
        default_factory=lambda: ["", "I heard my mother call my name from the kitchen.", "The new house was perfect."]
    )
    push_to_hub: str = ""  # a repo id; the token comes from HF_TOKEN and is never printed

    def __post_init__(self) -> None:
        self.pretrain_sources = [s if isinstance(s, Source) else _build(Source, s, "source") for s in self.pretrain_sources]
        self.finetune_sources = [s if isinstance(s, Source) else _build(Source, s, "source") for s in self.finetune_sources]
        # A partial phase in JSON keeps that phase's defaults for the fields it leaves out.
        defaults = {f.name: f.default_factory() for f in fields(self) if f.name in ("pretrain", "finetune")}
        for phase in ("pretrain", "finetune"):
            value = getattr(self, phase)
            if isinstance(value, dict):
                setattr(self, phase, _build(PhaseConfig, {**dataclasses.asdict(defaults[phase]), **value}, phase))
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.finetune_min_tokens >= self.finetune_max_tokens:
            raise ValueError("finetune_min_tokens must be below finetune_max_tokens")
        for phase in (self.pretrain, self.finetune):
            if phase.epochs < 1 or phase.batch_size < 1 or phase.grad_accum < 1 or phase.lr <= 0:
                raise ValueError(f"phase settings must be positive: {phase}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _build(cls: type, data: dict[str, Any], what: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} field(s) {unknown}; known fields are {sorted(known)}")
    return cls(**data)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as a path or a name


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """Read a JSON config, apply `--key value` / `--key=value` overrides (dotted for nesting)."""
    data: dict[str, Any] = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {path} is not valid JSON: {error}") from error
    items = list(overrides)
    while items:
        item = items.pop(0)
        if not item.startswith("--"):
            raise ValueError(f"expected --field value, got {item!r}")
        key, _, value = item[2:].partition("=")
        if not _:
            if not items:
                raise ValueError(f"override --{key} needs a value")
            value = items.pop(0)
        target = data
        *parents, leaf = key.replace("-", "_").split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = _parse_value(value)
    return _build(TrainConfig, data, "train config")
