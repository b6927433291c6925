"""Make a trained run the app's bundled default: copy its model folder into `assets/model/` and
draw the loss curves of both phases into `assets/loss_curves.png`.

    python train/ship_model.py runs/B --pretrain-run runs/A --card my-card.md

When pretraining and fine-tuning ran as two runs (the second started with `init_from` the first's
export), `--pretrain-run` adds the first run's pretraining facts to `card.json` and its curve to the
plot, so the app shows both phases. `--card` replaces the generated model card (README.md) with a
hand-written one (the bundled card quotes stories read by a person); `--sampling` changes the
default sampling settings (generation_config.json), e.g. '{"temperature": 0.9, "top_k": 100}',
chosen with `python -m horror evaluate`. The bundled model is checked
by loading it through StoryTeller before anything is replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

# `python train/ship_model.py` puts train/ first on sys.path, where train/train.py would hide the `train`
# package (installed: pip install -e .): take that entry off before importing the package.
if __name__ == "__main__" and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from horror.hub import BUNDLED_MODEL_DIR
from horror.model_folder import convert_model_folder, update_generation_config
from horror.storyteller import StoryTeller
from train.export import plot_loss_curves

PHASE_FACTS = ("val_loss", "tokens_seen", "steps", "train_seconds")
MAX_BUNDLED_BYTES = 60 * 1024 * 1024  # a Space repo holds the weights without Git LFS pain


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def pretraining_facts(run: Path) -> dict:
    """The pretrain phase of `run`, from its card.json if it exported one, else from its metrics."""
    card_path = run / "model" / "card.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        return {
            key: {"pretrain": card[key]["pretrain"]}
            for key in ("data", *PHASE_FACTS)
            if "pretrain" in card.get(key, {})
        }
    rows = [m for m in read_metrics(run) if m["phase"] == "pretrain"]
    if not rows:
        raise ValueError(f"{run} has no pretraining metrics")
    config = json.loads((run / "train_config.json").read_text())
    sources = [{"source": s["path"], "weight": s.get("weight", 1.0)} for s in config["pretrain_sources"]]
    return {
        "data": {"pretrain": {"sources": sources}},
        "val_loss": {"pretrain": min(m["val_loss"] for m in rows)},
        "tokens_seen": {"pretrain": rows[-1]["tokens"]},
        "steps": {"pretrain": rows[-1]["step"]},
    }


def merged_card(card: dict, pretrain: dict) -> dict:
    """`card` with the pretrain facts first in each per-phase table."""
    merged = dict(card)
    for key, value in pretrain.items():
        merged[key] = {**value, **{k: v for k, v in card.get(key, {}).items() if k != "pretrain"}}
    merged["pretrained_in"] = "a separate run"
    return merged


def ship(
    run: Path, pretrain_run: Path | None, card: Path | None, out: Path, curves: Path, sampling: dict | None = None
) -> None:
    folder = run / "model"
    size = (folder / "model.safetensors").stat().st_size
    if size > MAX_BUNDLED_BYTES:
        raise ValueError(f"model.safetensors is {size / 2**20:.1f} MiB; the bundled model must stay under 60 MiB")
    metrics = read_metrics(run)
    card_facts = json.loads((folder / "card.json").read_text())
    if pretrain_run is not None:
        card_facts = merged_card(card_facts, pretraining_facts(pretrain_run))
        metrics = [m for m in read_metrics(pretrain_run) if m["phase"] == "pretrain"] + metrics
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as staging:  # same filesystem: the move is a rename
        staged = Path(staging) / "model"
        shutil.copytree(folder, staged)
        convert_model_folder(staged, staged)  # a run exported before the GPT-2 format ships in it all the same
        (staged / "card.json").write_text(json.dumps(card_facts, indent=2) + "\n")
        if card is not None:
            (staged / "README.md").write_text(card.read_text())
        if sampling:
            update_generation_config(staged, **sampling)
        StoryTeller.load(staged, fallback=False).tell("", seed=0)  # it loads and writes, or we stop here
        if out.exists():
            shutil.rmtree(out)
        staged.replace(out)
    plot_loss_curves(metrics, curves)
    print(f"shipped {folder} -> {out} ({size / 2**20:.1f} MiB); loss curves -> {curves}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run folder (with model/ and metrics.jsonl)")
    parser.add_argument("--pretrain-run", type=Path, help="the run that pretrained it, if separate")
    parser.add_argument("--card", type=Path, help="a hand-written model card to ship as README.md")
    parser.add_argument("--sampling", type=json.loads, default=None, help="JSON: default sampling changes")
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL_DIR)
    parser.add_argument("--curves", type=Path, default=BUNDLED_MODEL_DIR.parent / "loss_curves.png")
    args = parser.parse_args()
    ship(args.run, args.pretrain_run, args.card, args.out, args.curves, args.sampling)


if __name__ == "__main__":
    main()
