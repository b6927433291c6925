"""Experiment trackers through Accelerate (`--log_with trackio|tensorboard|wandb`), next to
metrics.jsonl and the PNG curves, which stay.

TensorBoard writes its event files to runs/<name>/two-sentence-horror/ (`tensorboard --logdir runs`);
trackio and W&B log to the project "two-sentence-horror", the run named after the config's `name`.
Every metrics line goes to the tracker as scalars tagged by phase (`pretrain/val_loss`,
`finetune/val_loss/<source>`, ...) at one step count that runs on across phases, and the resolved
train config is stored with the run as its hyperparameters.
"""

from __future__ import annotations

import json
from typing import Any

from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

PROJECT = "two-sentence-horror"
_INSTALLED = {"trackio": is_trackio_available, "tensorboard": is_tensorboard_available, "wandb": is_wandb_available}
# The metrics.jsonl fields a tracker plots; phase, step and epoch are its tags and x-axis instead.
LOGGED_FIELDS = ("train_loss", "val_loss", "lr", "tokens_per_s", "tokens")

Scalar = str | int | float | bool


def require_tracker(name: str) -> None:
    """Stop before training when the tracker's package is missing: Accelerate would skip it quietly."""
    if name and not _INSTALLED[name]():
        raise ValueError(
            f"--log_with {name} needs the {name} package: pip install {name} "
            f"(or leave log_with empty: metrics.jsonl and the PNG curves are always written)"
        )


def init_kwargs(run_name: str) -> dict[str, dict[str, Any]]:
    """Per-tracker arguments for `Accelerator.init_trackers`: the run's name where a tracker takes one."""
    return {"trackio": {"name": run_name}, "wandb": {"name": run_name}}


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """The train config as the scalars trackers store as hyperparameters: nested objects as dotted
    keys (`pretrain.lr`), lists, empty objects and nulls as their JSON text (TensorBoard refuses None)."""
    flat: dict[str, Scalar] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, f"{prefix}{key}."))
        elif isinstance(value, (str, int, float, bool)):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)
    return flat


def tracker_values(record: dict[str, Any]) -> dict[str, float]:
    """One metrics.jsonl record as tracker scalars, tagged by its phase."""
    phase = record["phase"]
    values = {f"{phase}/{key}": record[key] for key in LOGGED_FIELDS if key in record}
    for source, loss in record.get("val_loss_by_source", {}).items():
        values[f"{phase}/val_loss/{source}"] = loss
    return values


def run_step(phase_steps: dict[str, int], phase: str) -> int:
    """The step across the whole run: the steps of the phases before this one plus this phase's.
    W&B drops a step lower than one it has seen, so the fine-tuning phase cannot start again at 1."""
    return sum(steps for name, steps in phase_steps.items() if name != phase) + phase_steps[phase]
