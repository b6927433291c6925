"""The Hub-style model folder: config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json and a README.md model card. Weights are safetensors only (no pickle).

Folders are written in GPT-2's format (horror/gpt2_format.py), which our loader and `transformers`
both read; folders in the older format (model_type horror-gpt, our own names) still load.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file

from horror import gpt2_format
from horror.config import GenerationConfig, ModelConfig
from horror.inference import is_quantized
from horror.model import GPT
from horror.tokenizer import StoryTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
CARD_FILE = "README.md"
CARD_METADATA_FILE = "card.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)


class ModelLoadError(ValueError):
    """A model folder is missing, incomplete, corrupt or inconsistent."""


@dataclass
class LoadedModel:
    model: GPT
    tokenizer: StoryTokenizer
    generation_config: GenerationConfig
    path: Path
    card_metadata: dict[str, Any]


def save_model_folder(
    folder: str | Path,
    model: GPT,
    tokenizer: StoryTokenizer,
    generation_config: GenerationConfig | None = None,
    card: str | None = None,
) -> Path:
    """Write everything `load_model_folder` and the Hub need into `folder`."""
    if is_quantized(model):  # its int8 layers hold no weights a state_dict could save
        raise ValueError("this model was quantized for serving; save the fp32 model it was prepared from")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    context_length = model.config.context_length
    _write_json(folder / CONFIG_FILE, gpt2_format.to_gpt2_config(model.config, tokenizer))
    save_file(gpt2_format.to_gpt2_state_dict(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    gpt2_format.tokenizer_for_transformers(tokenizer).save(str(folder / TOKENIZER_FILE))
    _write_json(folder / TOKENIZER_CONFIG_FILE, gpt2_format.tokenizer_config(tokenizer, context_length))
    settings = generation_config or GenerationConfig()
    _write_json(folder / GENERATION_CONFIG_FILE, gpt2_format.to_transformers_generation_config(settings, tokenizer))
    if card is not None:
        (folder / CARD_FILE).write_text(card)
    return folder


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def convert_model_folder(source: str | Path, destination: str | Path) -> Path:
    """Rewrite a model folder (either format) in the current one; `destination` may be `source`.

    The weights are the same numbers; the model card and card.json are copied as they are."""
    loaded = load_model_folder(source)  # everything is in memory before a file is replaced
    folder = save_model_folder(destination, loaded.model, loaded.tokenizer, loaded.generation_config)
    if loaded.path.resolve() != folder.resolve():
        for name in (CARD_FILE, CARD_METADATA_FILE):
            if (loaded.path / name).is_file():
                shutil.copyfile(loaded.path / name, folder / name)
    return folder


def update_generation_config(folder: str | Path, **changes: Any) -> GenerationConfig:
    """Change some of a model folder's default sampling settings (checked), keeping transformers' keys."""
    folder = Path(folder)
    settings = _read_generation_config(folder).replace(**changes)
    tokenizer = StoryTokenizer.load(folder / TOKENIZER_FILE)
    _write_json(folder / GENERATION_CONFIG_FILE, gpt2_format.to_transformers_generation_config(settings, tokenizer))
    return settings


def _read_generation_config(folder: Path) -> GenerationConfig:
    """The folder's default sampling settings (transformers' keys ignored); defaults when it has none."""
    path = folder / GENERATION_CONFIG_FILE
    if not path.is_file():
        return GenerationConfig()
    return gpt2_format.from_transformers_generation_config(json.loads(path.read_text()))


def read_card_metadata(folder: Path) -> dict[str, Any]:
    """Facts a training run recorded for the model card (`card.json`), if any."""
    path = folder / CARD_METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def load_model_folder(folder: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and check a model folder; every problem becomes a ModelLoadError saying what to fix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"model folder {folder} is missing {', '.join(missing)}")
    try:
        config_data = json.loads((folder / CONFIG_FILE).read_text())
        is_gpt2 = gpt2_format.is_gpt2_config(config_data)
        # The older format: our own field names, model_type horror-gpt.
        config = gpt2_format.from_gpt2_config(config_data) if is_gpt2 else ModelConfig.from_dict(config_data)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"{folder / CONFIG_FILE} is not a valid model config: {error}") from error
    try:
        tokenizer = StoryTokenizer.load(folder / TOKENIZER_FILE)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model config allows {config.vocab_size}: "
            "the tokenizer does not belong to these weights"
        )
    model = GPT(config)
    weights = folder / WEIGHTS_FILE
    try:
        if is_gpt2:
            model.load_state_dict(gpt2_format.from_gpt2_state_dict(load_file(str(weights), str(device)), config))
        else:
            load_model(model, str(weights), strict=True, device=str(device))
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(f"{weights} is corrupt or truncated: {error}") from error
    except (RuntimeError, ValueError) as error:  # missing/unexpected tensors or wrong shapes
        # The first line is only "Error(s) in loading state_dict"; the second names the problem.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        detail = lines[min(1, len(lines) - 1)][:300]
        raise ModelLoadError(f"{weights} does not match {CONFIG_FILE}: {detail}") from error
    model.to(device).eval()
    try:
        generation_config = _read_generation_config(folder)
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"{folder / GENERATION_CONFIG_FILE} is invalid: {error}") from error
    return LoadedModel(model, tokenizer, generation_config, folder, read_card_metadata(folder))
