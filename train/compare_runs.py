"""Compare trained runs on the same held-out stories and prompts: one Markdown table row each.

    python train/compare_runs.py runs/A2 runs/B runs/C --prompts train/eval_prompts.txt --corpus data/horror

Columns: parameters, tokens seen, train time, best validation loss (from the run), bits per
byte on the held-out horror stories (the trainer's hash split), and the `horror evaluate`
metrics (well-formed, novelty against the training stories, distinct-2, ms per story).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# `python train/compare_runs.py` puts train/ first on sys.path, where train/train.py would hide the `train`
# package (installed: pip install -e .): take that entry off before importing the package.
if __name__ == "__main__" and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from horror.evaluate import evaluate_model, load_lines
from horror.storyteller import StoryTeller
from train.data import build_corpus
from train.run_config import Source


def held_out_split(corpus: Path, fraction: float) -> tuple[list[str], list[str]]:
    """The horror stories as the trainer splits them: (training, held out)."""
    split = build_corpus([Source(str(corpus), format="lines")], fraction, seed=0)
    return split.train, split.val


def bits_per_byte(teller: StoryTeller, stories: list[str]) -> float:
    nll = byte_count = 0.0
    for story in stories:
        score = teller.score(story)
        nll += score.nll_per_token * score.tokens
        byte_count += score.bytes
    return nll / math.log(2) / byte_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders (holding model/) or model folders")
    parser.add_argument("--prompts", default="train/eval_prompts.txt")
    parser.add_argument("--corpus", default="data/horror", help="folder of horror stories, one per line")
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--json", help="also write every summary to this file")
    parser.add_argument(
        "--bits-only", action="store_true", help="only bits/byte on the held-out stories (no generation)"
    )
    args = parser.parse_args()
    train_stories, val_stories = held_out_split(Path(args.corpus), args.val_fraction)
    prompts = load_lines(args.prompts)
    print(f"{len(val_stories)} held-out stories, {len(prompts)} prompts x {args.samples} samples")
    print(
        "| run | params | tokens seen | train time | val loss (pre / fine) | bits/byte | well-formed | "
        "novelty | distinct-2 | ms/story |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    summaries = {}
    for run in args.runs:
        folder = Path(run) / "model" if (Path(run) / "model").is_dir() else Path(run)
        teller = StoryTeller.load(folder, fallback=False)
        card = teller.card_metadata
        if args.bits_only:
            print(
                f"| {run} | {teller.num_parameters / 1e6:.2f}M | bits/byte {bits_per_byte(teller, val_stories):.4f} |",
                flush=True,
            )
            continue
        summary = evaluate_model(teller, prompts, samples=args.samples, train_texts=train_stories)
        summary["bits_per_byte"] = bits_per_byte(teller, val_stories)
        summaries[run] = summary
        losses = card.get("val_loss", {})
        tokens = sum((card.get("tokens_seen") or {}).values())
        minutes = card.get("wall_seconds", 0) / 60
        print(
            f"| {run} | {teller.num_parameters / 1e6:.2f}M | {tokens:,} | {minutes:.0f} min | "
            f"{losses.get('pretrain', '-')} / {losses.get('finetune', '-')} | {summary['bits_per_byte']:.3f} | "
            f"{summary['well_formed']:.1%} | {summary['novelty']:.1%} | {summary['distinct_2']:.3f} | "
            f"{summary['seconds_per_story'] * 1000:.0f} |",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
