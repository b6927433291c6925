"""The training run's configuration: one JSON file is the single source of truth, and every
field can be overridden on the command line (`--field value`, `--field=value`; nested fields
as `--pretrain.lr 1e-3`; lists and objects as JSON). The resolved config is saved in the run
folder as `train_config.json`."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from horror.config import model_preset, reject_unknown_fields

FORMATS = ("auto", "stories", "lines", "jsonl")
SPLITS = ("hash", "train", "val")
TRACKERS = ("trackio", "tensorboard", "wandb")  # what `log_with` accepts, through Accelerate


@dataclass
class PhaseConfig:
    """One training phase (pretrain or fine-tune)."""

    epochs: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio, never below
    warmup_steps: int = 100
    warmup_fraction: float = 0.0  # > 0: warmup is this share of the phase's steps (overrides warmup_steps)
    weight_decay: float = 0.1  # matrices only; biases, norms and embeddings are never decayed
    batch_size: int = 32  # rows of context_length tokens per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    grad_clip: float = 1.0  # 0 disables
    dropout: float | None = None  # None keeps the model config's dropout
    patience: int = 3  # evaluations without improvement before stopping early (0 = never stop early)
    eval_every: int = 200  # optimizer steps; an evaluation also ends every epoch
    max_steps: int = 0  # 0 = no limit (for smoke tests and quick runs)


@dataclass
class Source:
    """A corpus: a local file, folder or glob (.txt, .txt.xz, .jsonl) or a Hub dataset id."""

    path: str
    weight: float = 1.0  # 2.0 repeats the source twice; 0.5 samples half of it
    format: str = "auto"  # auto | stories (`<|endoftext|>` lines between) | lines (one per line) | jsonl (`text`)
    data_files: str | None = None  # Hub datasets only, e.g. "TinyStoriesV2-GPT4-train.txt"
    max_stories: int = 0  # 0 = all; else the first N stories of the source (before weighting)
    split: str = "hash"  # hash: split by hash of the text; train / val: all of it on one side
    fix_mojibake: bool = False  # TinyStories V1 holds UTF-8 decoded as cp1252 ("â€™" for "’")
    chunk_words: int = 0  # > 0: cut documents into pieces of at most this many words (books, chapters)
    val_max: int = 0  # > 0: keep at most this many held-out pieces of this source (evaluation time)
    chain: bool = False  # story chains: each starts with <CHAIN> instead of <BOS> (the chain mode's prompt)
    name: str = ""  # a label for its validation loss in the metrics; default: from the path

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        stem = self.path.rstrip("/").split("/")[-1]
        for suffix in (".xz", ".txt", ".jsonl"):
            stem = stem.removesuffix(suffix)
        return stem.replace("*", "") or self.path

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"a data source needs a path or Hub id, got {self.path!r}")
        if self.format not in FORMATS:
            raise ValueError(f"source {self.path}: format must be one of {FORMATS}, got {self.format!r}")
        if self.split not in SPLITS:
            raise ValueError(f"source {self.path}: split must be one of {SPLITS}, got {self.split!r}")
        if not self.weight > 0:
            raise ValueError(f"source {self.path}: weight must be positive, got {self.weight}")


@dataclass
class TrainConfig:
    name: str = "run"
    out_dir: str = ""  # default runs/<name>
    seed: int = 1337
    model_preset: str = "cpu-tiny"  # a horror.config preset; vocab_size comes from the tokenizer
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # tokenizer
    tokenizer_from: str = ""  # a model folder (or Hub id) whose tokenizer to reuse; else train one
    vocab_size: int = 20_000
    min_frequency: int = 3
    tokenizer_stories_per_corpus: int = 50_000  # the original trained on 50K TinyStories + 50K horror
    # data
    pretrain_sources: list[Source] = field(default_factory=list)
    finetune_sources: list[Source] = field(default_factory=list)
    finetune_min_tokens: int = 16  # a story's length incl. <BOS> and <EOS>; ours run 24-68 tokens
    finetune_max_tokens: int = 80
    val_fraction: float = 0.05
    cache_dir: str = ".cache/tokenized"  # tokenised corpora, keyed by (tokenizer, stories)
    # phases
    init_from: str = ""  # a model folder (or Hub id) to start from instead of random weights
    skip_pretrain: bool = False
    skip_finetune: bool = False
    pretrain: PhaseConfig = field(
        default_factory=lambda: PhaseConfig(epochs=10, lr=3e-4, warmup_fraction=0.1, weight_decay=0.1)
    )
    finetune: PhaseConfig = field(
        default_factory=lambda: PhaseConfig(epochs=20, lr=2e-5, warmup_fraction=0.05, weight_decay=0.1)
    )
    # machinery
    mixed_precision: str = "auto"  # auto (bf16 where the hardware has it) | no | bf16 | fp16
    compile: bool = False  # torch.compile the model (CUDA: faster after a minute of compiling)
    num_threads: int = 0  # CPU threads per process; 0 = torch's default
    checkpoint_every: int = 200  # optimizer steps; a checkpoint also ends every phase
    sample_prompts: list[str] = field(
        default_factory=lambda: ["", "I heard my mother call my name from the kitchen.", "The new house was perfect."]
    )
    push_to_hub: str = ""  # a Hub repo id; the token comes from HF_TOKEN and is never printed
    log_with: str = ""  # "" (metrics.jsonl and the PNG curves only) | trackio | tensorboard | wandb

    def __post_init__(self) -> None:
        for name in ("pretrain_sources", "finetune_sources"):
            value = getattr(self, name)
            if not isinstance(value, list):
                raise ValueError(f"{name} must be a list of sources, got {value!r}")
            setattr(self, name, [s if isinstance(s, Source) else _build(Source, s, f"{name} entry") for s in value])
        # A partial phase in JSON keeps that phase's defaults for the fields it leaves out.
        defaults = {f.name: f.default_factory() for f in fields(self) if f.name in ("pretrain", "finetune")}
        for phase in ("pretrain", "finetune"):
            value = getattr(self, phase)
            if isinstance(value, dict):
                if "warmup_steps" in value and "warmup_fraction" not in value:
                    value = {**value, "warmup_fraction": 0.0}  # steps given: the default fraction must not win
                setattr(self, phase, _build(PhaseConfig, {**dataclasses.asdict(defaults[phase]), **value}, phase))
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if not 2 <= self.finetune_min_tokens < self.finetune_max_tokens:
            raise ValueError(
                f"need 2 <= finetune_min_tokens < finetune_max_tokens, got {self.finetune_min_tokens}, "
                f"{self.finetune_max_tokens}"
            )
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.log_with and self.log_with not in TRACKERS:
            raise ValueError(f"log_with must be one of {', '.join(TRACKERS)} (or empty), got {self.log_with!r}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {self.checkpoint_every}")
        for name in ("pretrain", "finetune"):
            phase = getattr(self, name)
            for key in ("epochs", "batch_size", "grad_accum", "eval_every"):
                if not isinstance(getattr(phase, key), int) or getattr(phase, key) < 1:
                    raise ValueError(f"{name}.{key} must be a positive integer, got {getattr(phase, key)!r}")
            if not phase.lr > 0 or not 0 <= phase.min_lr_ratio <= 1 or not 0 <= phase.warmup_fraction < 1:
                raise ValueError(f"{name}: need lr > 0, min_lr_ratio in [0, 1], warmup_fraction in [0, 1)")
            # JSON allows NaN and Infinity, and a negative count would silently mean "never".
            for key in ("lr", "weight_decay", "grad_clip", "warmup_steps", "patience", "eval_every", "max_steps"):
                _check_at_least(f"{name}.{key}", getattr(phase, key), 0)
            if phase.dropout is not None and not 0 <= phase.dropout < 1:
                raise ValueError(f"{name}.dropout must be in [0, 1) or null, got {phase.dropout!r}")
        for key, low in (
            ("seed", 0),
            ("vocab_size", 300),
            ("min_frequency", 1),
            ("num_threads", 0),
            ("tokenizer_stories_per_corpus", 1),
        ):
            _check_at_least(key, getattr(self, key), low)
        for source in self.pretrain_sources + self.finetune_sources:
            _check_at_least(f"source {source.path}: weight", source.weight, 0)
            _check_at_least(f"source {source.path}: max_stories", source.max_stories, 0)
            _check_at_least(f"source {source.path}: chunk_words", source.chunk_words, 0)
            _check_at_least(f"source {source.path}: val_max", source.val_max, 0)
        if not isinstance(self.sample_prompts, list) or not all(isinstance(p, str) for p in self.sample_prompts):
            raise ValueError(f"sample_prompts must be a list of strings, got {self.sample_prompts!r}")
        if not isinstance(self.model_overrides, dict) or "vocab_size" in self.model_overrides:
            raise ValueError(
                f"model_overrides must be an object without vocab_size (the tokenizer sets it), "
                f"got {self.model_overrides!r}"
            )
        try:  # a bad preset name or override should stop the run now, not after the data is read
            model_preset(self.model_preset, **self.model_overrides)
        except TypeError as error:
            raise ValueError(f"model_overrides: {error}") from error

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _build(cls: type, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {data!r}")
    reject_unknown_fields(cls, data, what)
    for f in fields(cls):
        if f.name in data and not _has_type(data[f.name], str(f.type)):
            raise ValueError(f"{what} field {f.name!r} must be {f.type}, got {data[f.name]!r}")
    try:
        return cls(**data)
    except TypeError as error:  # a required field is missing
        raise ValueError(f"bad {what}: {error}") from error


def _check_at_least(name: str, value: Any, low: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")


_SIMPLE_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _has_type(value: Any, annotation: str) -> bool:
    """Check the simple scalar fields (JSON has no other way to catch `"lr": "fast"`)."""
    options = [part.strip() for part in annotation.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        allowed = _SIMPLE_TYPES.get(option)
        if allowed is None:
            return True  # lists, dicts and nested dataclasses are checked where they are built
        if isinstance(value, allowed) and (option == "bool" or not isinstance(value, bool)):
            return True
    return False


def _parse_value(text: str, annotation: str) -> Any:
    if annotation == "str":
        return text  # `--name 123` is the name "123"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as a path; the dataclass check will catch a wrong type
    if annotation.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_config(path: str | Path | None, overrides: list[str]) -> TrainConfig:
    """Read a JSON config and apply `--key value` / `--key=value` overrides (dotted for nesting)."""
    data: dict[str, Any] = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist (presets live in train/configs/)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"config file {path} is not valid JSON: {error}") from error
    items = list(overrides)
    while items:
        item = items.pop(0)
        if not item.startswith("--") or len(item) == 2:
            raise ValueError(f"expected --field value, got {item!r}")
        key, has_value, value = item[2:].partition("=")
        if not has_value:
            if not items:
                raise ValueError(f"override --{key} needs a value")
            value = items.pop(0)
        target = data
        *parents, leaf = key.replace("-", "_").split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ValueError(f"--{key}: {parent} is not an object")
        target[leaf] = _parse_value(value, _annotation(parents, leaf))
    return _build(TrainConfig, data, "train config")


def _annotation(parents: list[str], leaf: str) -> str:
    """The declared type of a (possibly nested) field, as written in the dataclass."""
    cls: type = TrainConfig
    if parents == ["pretrain"] or parents == ["finetune"]:
        cls = PhaseConfig
    elif parents:
        return ""
    return next((str(f.type) for f in fields(cls) if f.name == leaf), "")
