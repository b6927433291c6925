"""The Hub-style model folder: config.json, model.safetensors, tokenizer.json,
generation_config.json and a README.md model card. Weights are safetensors only (no pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from horror.config import GenerationConfig, ModelConfig
from horror.inference import is_quantized
from horror.model import GPT
from horror.tokenizer import StoryTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"
CARD_FILE = "README.md"
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
    model.config.save(folder / CONFIG_FILE)
    # save_model drops the duplicate of a tied head, which save_file would refuse.
    save_model(model, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save(folder / TOKENIZER_FILE)
    (generation_config or GenerationConfig()).save(folder / GENERATION_CONFIG_FILE)
    if card is not None:
        (folder / CARD_FILE).write_text(card)
    return folder


def read_card_metadata(folder: Path) -> dict[str, Any]:
    """Facts a training run recorded for the model card (`card.json`), if any."""
    path = folder / "card.json"
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
        config = ModelConfig.load(folder / CONFIG_FILE)
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
    try:
        load_model(model, str(folder / WEIGHTS_FILE), strict=True, device=str(device))
    except (SafetensorError, OSError) as error:
        raise ModelLoadError(f"{folder / WEIGHTS_FILE} is corrupt or truncated: {error}") from error
    except RuntimeError as error:  # missing/unexpected keys or wrong shapes
        # The first line is only "Error(s) in loading state_dict"; the second names the problem.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        detail = lines[min(1, len(lines) - 1)][:300]
        raise ModelLoadError(f"{folder / WEIGHTS_FILE} does not match {CONFIG_FILE}: {detail}") from error
    model.to(device).eval()
    generation_config = GenerationConfig()
    if (folder / GENERATION_CONFIG_FILE).is_file():
        try:
            generation_config = GenerationConfig.load(folder / GENERATION_CONFIG_FILE)
        except (ValueError, TypeError) as error:
            raise ModelLoadError(f"{folder / GENERATION_CONFIG_FILE} is invalid: {error}") from error
    return LoadedModel(model, tokenizer, generation_config, folder, read_card_metadata(folder))
