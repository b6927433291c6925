"""A blind read: stories from several models (or sampling settings) for the same prompts, mixed
with their labels hidden, for a reader who judges each story and ranks each prompt's group.

    python train/blind_read.py make --out runs/blind --key /tmp/blind-key.json \\
        --model new=runs/long/model --model old=assets/model \\
        --model 'new-t0.7=runs/long/model:{"temperature": 0.7}'
    # the reader reads runs/blind/stories.md only and writes runs/blind/judgments.jsonl
    python train/blind_read.py score --key /tmp/blind-key.json --judgments runs/blind/judgments.jsonl

`make` writes `stories.md` (groups of stories per prompt, each story under a random letter) and the
key (which letter is which model), which the reader must not see. A judgment line per group:
    {"group": 3, "stories": {"A": {"grammatical": true, "coherent": false}, ...}, "ranking": ["B", "A"]}
`score` prints per model: grammatical and coherent counts, and for each pair of models how often
each was ranked above the other.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

from horror.evaluate import load_lines, prompt_seed
from horror.storyteller import StoryTeller

LETTERS = "ABCDEFGH"


def parse_model(spec: str) -> tuple[str, str, dict]:
    """NAME=FOLDER or NAME=FOLDER:{json sampling overrides}."""
    name, _, rest = spec.partition("=")
    folder, _, overrides = rest.partition(":")
    if not name or not folder:
        raise ValueError(f"--model takes NAME=FOLDER[:JSON], got {spec!r}")
    return name, folder, json.loads(overrides) if overrides else {}


def make(args: argparse.Namespace) -> None:
    models = [parse_model(spec) for spec in args.model]
    if len(models) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} models")
    prompts = load_lines(args.prompts)[: args.n]
    stories: dict[str, list[str]] = {}
    for name, folder, overrides in models:
        teller = StoryTeller.load(folder, fallback=False)
        stories[name] = [
            teller.tell(prompt, seed=prompt_seed(args.seed, i), **overrides).story for i, prompt in enumerate(prompts)
        ]
    rng = random.Random(args.seed)
    key, lines = [], ["# Blind read", "", "Each group holds stories that continue the same first sentence.", ""]
    for group in range(1, len(prompts) + 1):
        order = rng.sample([name for name, _, _ in models], len(models))
        key.append({"group": group, "letters": dict(zip(LETTERS, order))})
        lines += [f"## Group {group}", ""]
        lines += [f"- **{letter}**: {stories[name][group - 1]}" for letter, name in zip(LETTERS, order)]
        lines.append("")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stories.md").write_text("\n".join(lines), encoding="utf-8")
    Path(args.key).write_text(json.dumps({"models": models, "groups": key}, indent=1), encoding="utf-8")
    print(f"wrote {out / 'stories.md'} ({len(prompts)} groups of {len(models)}) and the key {args.key}")


def score(args: argparse.Namespace) -> None:
    key = json.loads(Path(args.key).read_text(encoding="utf-8"))
    letters = {entry["group"]: entry["letters"] for entry in key["groups"]}
    names = [name for name, _, _ in key["models"]]
    counts = {name: {"stories": 0, "grammatical": 0, "coherent": 0} for name in names}
    wins = {pair: 0 for pair in itertools.permutations(names, 2)}
    for line in Path(args.judgments).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        judgment = json.loads(line)
        mapping = letters[judgment["group"]]
        for letter, marks in judgment["stories"].items():
            tally = counts[mapping[letter]]
            tally["stories"] += 1
            tally["grammatical"] += bool(marks["grammatical"])
            tally["coherent"] += bool(marks["coherent"])
        ranked = [mapping[letter] for letter in judgment["ranking"]]
        for better, worse in itertools.combinations(ranked, 2):
            wins[(better, worse)] += 1
    for name in names:
        tally = counts[name]
        n = max(tally["stories"], 1)
        print(
            f"{name}: {tally['stories']} stories, grammatical {tally['grammatical']} ({tally['grammatical'] / n:.0%}), "
            f"coherent setup + twist {tally['coherent']} ({tally['coherent'] / n:.0%})"
        )
    for a, b in itertools.combinations(names, 2):
        total = max(wins[(a, b)] + wins[(b, a)], 1)
        print(f"{a} vs {b}: {a} better in {wins[(a, b)]} of {total} groups ({wins[(a, b)] / total:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    maker = commands.add_parser("make", help="generate and mix the stories")
    maker.add_argument("--model", action="append", required=True, help="NAME=FOLDER[:JSON sampling overrides]")
    maker.add_argument("--prompts", default="train/eval_prompts.txt")
    maker.add_argument("--n", type=int, default=60, help="prompts (one story per model each)")
    maker.add_argument("--seed", type=int, default=0)
    maker.add_argument("--out", required=True, help="folder for stories.md (what the reader sees)")
    maker.add_argument("--key", required=True, help="where the hidden key goes (keep it away from the reader)")
    scorer = commands.add_parser("score", help="count the reader's judgments")
    scorer.add_argument("--key", required=True)
    scorer.add_argument("--judgments", required=True)
    args = parser.parse_args()
    make(args) if args.command == "make" else score(args)


if __name__ == "__main__":
    main()
