"""Export a finished run: the Hub-style model folder (model card README.md with YAML metadata,
and card.json with the run's facts), the loss-curve plot, and a printable summary."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from horror.config import GenerationConfig
from horror.model import GPT
from horror.model_folder import save_model_folder
from horror.tokenizer import StoryTokenizer
from train.run_config import Source, TrainConfig

# The original project's sampling defaults, written to generation_config.json.
ORIGINAL_SAMPLING = GenerationConfig(temperature=0.4, top_k=30, top_p=0.9, repetition_penalty=1.2, max_new_tokens=55)
PHASE_TITLES = {"pretrain": "pretraining", "finetune": "fine-tuning"}
# The card's YAML keys in the order a reader looks for them (huggingface_hub would sort them).
CARD_KEY_ORDER = ["license", "language", "library_name", "pipeline_tag", "tags", "datasets", "model-index"]


def plot_loss_curves(metrics: list[dict], path: Path) -> None:
    """Train and validation loss per phase, side by side (matplotlib's Agg backend: no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in PHASE_TITLES if any(m["phase"] == p for m in metrics)]
    if not phases:
        return
    figure, axes = plt.subplots(1, len(phases), figsize=(5.5 * len(phases), 3.6), squeeze=False)
    for axis, phase in zip(axes[0], phases):
        rows = [m for m in metrics if m["phase"] == phase]
        steps = [m["step"] for m in rows]
        axis.plot(steps, [m["train_loss"] for m in rows], label="train (mean since last eval)", alpha=0.8)
        axis.plot(steps, [m["val_loss"] for m in rows], label="validation", marker="o", markersize=3)
        axis.set_title(PHASE_TITLES[phase])
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("cross-entropy (nats/token)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_facts(cfg: TrainConfig, model: GPT, state: dict) -> dict:
    """What card.json records: the app and CLI show these."""
    phases = [p for p in PHASE_TITLES if p in state["done"]]
    return {
        "untrained": False,
        "name": cfg.name,
        "parameters": model.num_parameters(),
        "model_preset": cfg.model_preset if not cfg.init_from else None,
        "init_from": cfg.init_from or None,
        "data": state["facts"],
        "val_loss": {p: round(state["phases"][p]["best"], 4) for p in phases},
        "tokens_seen": {p: state["phases"][p]["tokens"] for p in phases},
        "steps": {p: state["phases"][p]["step"] for p in phases},
        "train_seconds": {p: round(state["phases"][p]["train_seconds"], 1) for p in phases},
        "wall_seconds": round(state["wall_seconds"], 1),
    }


def _recipe_line(name: str, cfg: TrainConfig) -> str:
    phase = getattr(cfg, name)
    warmup = f"{phase.warmup_fraction:.0%} of steps" if phase.warmup_fraction else f"{phase.warmup_steps} steps"
    return (
        f"- {PHASE_TITLES[name]}: up to {phase.epochs} epochs, AdamW (betas 0.9/0.95) lr {phase.lr:g}, "
        f"linear warmup {warmup}, cosine decay to {phase.min_lr_ratio:g}x, weight decay {phase.weight_decay:g} "
        f"(matrices only), gradient clip {phase.grad_clip:g}, batch {phase.batch_size} x {phase.grad_accum} rows, "
        f"early stopping patience {phase.patience or 'off'} (evaluating every {phase.eval_every} steps and "
        f"each epoch); the weights with the best validation loss are kept."
    )


def _is_hub_dataset(source: str) -> bool:
    return not Path(source).exists() and source.count("/") == 1


def card_metadata(name: str, facts: dict) -> ModelCardData:
    """The card's YAML: what the Hub shows and filters by, with the scores in `model-index`.

    One result per phase: its best validation loss on the stories held out of that phase's data,
    plus bits per byte on held-out horror stories when card.json has `bits_per_byte`."""
    hub_datasets = sorted(
        {s["source"] for d in facts["data"].values() for s in d["sources"] if _is_hub_dataset(s["source"])}
    )
    results = []
    for phase, data in facts["data"].items():
        if phase not in facts.get("val_loss", {}):
            continue
        dataset = dict(
            task_type="text-generation",
            dataset_split="validation",
            dataset_type=" + ".join(
                s["source"] if _is_hub_dataset(s["source"]) else s.get("label") or Source(s["source"]).label
                for s in data["sources"]
            ),
            dataset_name=f"{PHASE_TITLES[phase]} data, held-out stories",
        )
        results.append(
            EvalResult(
                **dataset,
                metric_type="loss",
                metric_value=facts["val_loss"][phase],
                metric_name="validation loss (nats/token)",
            )
        )
        if phase == "finetune" and facts.get("bits_per_byte") is not None:
            results.append(
                EvalResult(
                    **dataset,
                    metric_type="bits_per_byte",
                    metric_value=facts["bits_per_byte"],
                    metric_name="bits per byte (held-out horror stories)",
                )
            )
    return ModelCardData(
        license="mit",
        language="en",
        library_name="transformers",  # the folder is GPT-2's format (horror/gpt2_format.py)
        pipeline_tag="text-generation",
        tags=["text-generation", "horror", "two-sentence-horror", "gpt2", "from-scratch"],
        datasets=hub_datasets or None,
        model_name=name if results else None,
        eval_results=results or None,
    )


def model_card(cfg: TrainConfig, model: GPT, facts: dict) -> str:
    """README.md for the model folder, with Hub YAML metadata."""
    c = model.config
    table = "\n".join(
        f"| {PHASE_TITLES[p]} | {', '.join(Path(s['source']).name or s['source'] for s in d['sources'])} | "
        f"{d['train_kept']:,} ({d['train_kept_share']:.1%} kept) | {d['val_kept']:,} | "
        f"{facts['tokens_seen'].get(p, 0):,} | {facts['val_loss'].get(p, '-')} |"
        for p, d in facts["data"].items()
    )
    metadata = card_metadata(cfg.name, facts).to_yaml(original_order=CARD_KEY_ORDER)
    tokens = sum(facts["tokens_seen"].values())
    return f"""---
{metadata}
---
# Two-Sentence Horror — {cfg.name}

A {model.num_parameters() / 1e6:.1f}M-parameter GPT-style decoder-only transformer trained from scratch to write
two-sentence horror stories (sentence one: an ordinary setup; sentence two: the twist).

## Model
{c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads, FFN {c.d_ff}, context {c.context_length} tokens,
vocabulary {c.vocab_size} (byte-level BPE), dropout {c.dropout}, tied embeddings: {c.tie_embeddings}.

## Data
| phase | sources | training stories | validation stories | tokens seen | best val loss (nats/token) |
|---|---|---|---|---|---|
{table}

Validation stories are chosen by a hash of their text ({cfg.val_fraction:.0%}), so a story never moves between
splits. Fine-tuning keeps stories of {cfg.finetune_min_tokens}-{cfg.finetune_max_tokens} tokens (with <BOS> and
<EOS>); pretraining keeps stories that fit the context window.

## Training recipe
{_recipe_line("pretrain", cfg) if "pretrain" in facts["data"] else ""}
{_recipe_line("finetune", cfg) if "finetune" in facts["data"] else ""}
- Pretraining rows pack stories end to end (<BOS> story <EOS> ...) into full {c.context_length}-token windows;
  fine-tuning rows hold whole stories, padding ignored by the loss. Attention is plain causal over a row.

{tokens:,} tokens seen in {facts["wall_seconds"] / 60:.1f} min of wall time. Full config: `train_config.json`
in the run folder; the facts above are in `card.json`.

## Use
With `transformers` (the folder is GPT-2's format):
```python
from transformers import pipeline
generate = pipeline("text-generation", model="path/or/hub-repo-id")
print(generate("I heard my mother call my name from the kitchen.")[0]["generated_text"])
```
With this project's library (the same sampling, plus its stopping rules and story chains):
```python
from horror.storyteller import StoryTeller
teller = StoryTeller.load("path/or/hub-repo-id")
print(teller.tell("I heard my mother call my name from the kitchen.").story)
```
Default sampling (generation_config.json, which both read): temperature 0.4, top-k 30, top-p 0.9, repetition
penalty 1.2, 55 new tokens, stop at <EOS>.

## Limitations
A small model trained on synthetic stories: it repeats themes, sometimes loses the thread between the two
sentences, and can write dark content (PG-13 by intent, not by guarantee).
"""


def export_run(cfg: TrainConfig, model: GPT, tokenizer: StoryTokenizer, state: dict, run_dir: Path) -> Path:
    """Write run_dir/model (weights, tokenizer, configs, card, card.json) and run_dir/loss_curves.png."""
    facts = run_facts(cfg, model, state)
    folder = save_model_folder(
        run_dir / "model", model.eval(), tokenizer, ORIGINAL_SAMPLING, model_card(cfg, model, facts)
    )
    (folder / "card.json").write_text(json.dumps(facts, indent=2) + "\n")
    plot_loss_curves(state["metrics"], run_dir / "loss_curves.png")
    return folder


def summary(cfg: TrainConfig, state: dict, folder: Path) -> str:
    """The end-of-run report: best validation loss per phase, tokens, time, throughput."""
    lines = [f"run {cfg.name} finished; model folder: {folder}"]
    for name in PHASE_TITLES:
        progress = state["phases"].get(name)
        if progress and name in state["done"]:
            rate = progress["tokens"] / max(progress["train_seconds"], 1e-9)
            lines.append(
                f"  {name:8s} best val loss {progress['best']:.4f} after {progress['step']:,} steps; "
                f"{progress['tokens']:,} tokens at {rate:,.0f} tokens/s"
            )
    lines.append(f"  wall time {state['wall_seconds'] / 60:.1f} min")
    return "\n".join(lines)
