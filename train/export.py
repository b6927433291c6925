"""Export a finished run: the Hub-style model folder (with model card and card.json facts),
the loss-curve plot and a summary."""

from __future__ import annotations

import json
from pathlib import Path

from horror.config import GenerationConfig
from horror.model import GPT
from horror.model_folder import save_model_folder
from horror.tokenizer import StoryTokenizer
from train.run_config import TrainConfig

ORIGINAL_SAMPLING = GenerationConfig(temperature=0.4, top_k=30, top_p=0.9, repetition_penalty=1.2, max_new_tokens=55)


def plot_loss_curves(metrics: list[dict], path: Path) -> None:
    """Train and validation loss per phase, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in ("pretrain", "finetune") if any(m["phase"] == p for m in metrics)]
    if not phases:
        return
    figure, axes = plt.subplots(1, len(phases), figsize=(5.5 * len(phases), 3.6), squeeze=False)
    for axis, phase in zip(axes[0], phases):
        rows = [m for m in metrics if m["phase"] == phase]
        steps = [m["step"] for m in rows]
        axis.plot(steps, [m["train_loss"] for m in rows], label="train (last batch)", alpha=0.7)
        axis.plot(steps, [m["val_loss"] for m in rows], label="validation", marker="o", markersize=3)
        axis.set_title(phase)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("cross-entropy (nats/token)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def best_val(state: dict, phase: str) -> float | None:
    return state.get(phase, {}).get("best")


def model_card(cfg: TrainConfig, model: GPT, facts: dict) -> str:
    """README.md for the model folder, with Hub YAML metadata."""
    c = model.config
    losses = facts["val_loss"]
    rows = "\n".join(
        f"| {phase} | {', '.join(Path(s).name for s in facts['data'].get(phase, {}).get('sources', []))} | "
        f"{facts['data'].get(phase, {}).get('train_stories', '-')} | {facts['tokens_seen'].get(phase, 0):,} | "
        f"{losses.get(phase) if losses.get(phase) is not None else '-'} |"
        for phase in ("pretrain", "finetune") if phase in facts["data"]
    )
    return f"""---
license: mit
language: en
library_name: pytorch
pipeline_tag: text-generation
tags: [text-generation, horror, two-sentence-horror, gpt, from-scratch]
---
# Two-Sentence Horror — {cfg.name}

A {model.num_parameters() / 1e6:.1f}M-parameter GPT-style decoder-only transformer trained from scratch to write
two-sentence horror stories (sentence one: an ordinary setup; sentence two: the twist).

## Model
{c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads, FFN {c.d_ff}, context {c.context_length} tokens,
vocabulary {c.vocab_size} (byte-level BPE), dropout {c.dropout}, tied embeddings: {c.tie_embeddings}.

## Training
| phase | data | stories (train) | tokens seen | best val loss (nats/token) |
|---|---|---|---|---|
{rows}

Recipe: AdamW, cosine schedule with warmup; pretrain lr {cfg.pretrain.lr}, fine-tune lr {cfg.finetune.lr},
weight decay {cfg.finetune.weight_decay}, early stopping (patience {cfg.finetune.patience}). Wall time
{facts['wall_seconds'] / 60:.1f} min. Full config: `train_config.json` in the run folder.

## Use
```python
from horror import StoryTeller
teller = StoryTeller.load("path/or/hub-repo-id")
print(teller.tell("I heard my mother call my name from the kitchen.").story)
```
Default sampling (generation_config.json): temperature 0.4, top-k 30, top-p 0.9, repetition penalty 1.2,
55 new tokens, stop at `<EOS>`.
"""


def export_run(cfg: TrainConfig, model: GPT, tokenizer: StoryTokenizer, state: dict, run_dir: Path) -> str:
    """Write run_dir/model and loss_curves.png; return a printable summary."""
    phases = [p for p in ("pretrain", "finetune") if p in state and isinstance(state[p], dict)]
    facts = {
        "untrained": False,
        "name": cfg.name,
        "parameters": model.num_parameters(),
        "data": state.get("facts", {}),
        "val_loss": {p: round(best_val(state, p), 4) for p in phases if best_val(state, p) is not None},
        "tokens_seen": {p: state[p]["tokens"] for p in phases},
        "wall_seconds": round(state.get("wall_seconds", 0.0), 1),
    }
    folder = save_model_folder(run_dir / "model", model, tokenizer, ORIGINAL_SAMPLING, model_card(cfg, model, facts))
    (folder / "card.json").write_text(json.dumps(facts, indent=2) + "\n")
    plot_loss_curves(state.get("metrics", []), run_dir / "loss_curves.png")
    tokens = sum(facts["tokens_seen"].values())
    rate = tokens / facts["wall_seconds"] if facts["wall_seconds"] else 0.0
    lines = [f"run {cfg.name} finished: model in {folder}"]
    lines += [f"  best val loss {p}: {facts['val_loss'].get(p)}" for p in phases]
    lines.append(f"  tokens seen {tokens:,}; wall time {facts['wall_seconds'] / 60:.1f} min; {rate:,.0f} tokens/s")
    return "\n".join(lines)
