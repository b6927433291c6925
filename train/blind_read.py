"""A blind read: stories from several models (or sampling settings) for the same prompts, mixed
with their labels hidden, for a reader who judges each story and ranks each prompt's group.

    python train/blind_read.py make --out runs/blind --key /tmp/blind-key.json \\
        --model new=runs/long/model --model old=assets/model \\
        --model 'new-t0.7=runs/long/model:{"temperature": 0.7}' \\
        --model 'new-best4=runs/long/model:{"best_of": 4}'
    # the reader reads runs/blind/stories.md only and writes runs/blind/judgments.jsonl
    python train/blind_read.py score --key /tmp/blind-key.json --judgments runs/blind/judgments.jsonl
    # several reads pooled: a --key and a --judgments per read, in the same order

`make` writes `stories.md` (groups of stories per prompt, each story under a random letter) and the
key (which letter is which model), which the reader must not see. A judgment line per group:
    {"group": 3, "stories": {"A": {"grammatical": true, "coherent": false}, ...}, "ranking": ["B", "A"]}
`score` prints per model: grammatical and coherent counts, and for each pair of models how often
each was ranked above the other, each with a 95% Wilson interval (60 stories pin a share down to
about +-12 points, so small differences between models are noise). A judgments file that does not
match the key (an unknown group or letter, a group judged twice) is refused, naming the line.

`--held-out data/horror` adds a control: the prompts become the first sentences of stories people
wrote (from the trainer's held-out split, never trained on), and those stories join the read as
the model `reference`, so the counts say how often this reader passes human writing too.

`best_of` in a model's overrides samples that many stories and keeps the one the model was most
sure of (the app's "Best of N"); without it a model's own `generation_config.json` decides.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import sys
from pathlib import Path

# `python train/blind_read.py` puts train/ first on sys.path, where train/train.py would hide the `train`
# package: take that entry off before importing it (as compare_runs does).
if __name__ == "__main__" and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from horror.evaluate import first_sentence, load_lines, prompt_seed
from horror.storyteller import StoryTeller
from horror.text import count_sentences, one_line
from train.compare_runs import held_out_split

LETTERS = "ABCDEFGH"
REFERENCE = "reference"  # the stories people wrote, in a read with --held-out


def parse_model(spec: str) -> tuple[str, str, dict]:
    """NAME=FOLDER or NAME=FOLDER:{json sampling overrides}."""
    name, _, rest = spec.partition("=")
    folder, _, overrides = rest.partition(":")
    if not name or not folder:
        raise ValueError(f"--model takes NAME=FOLDER[:JSON], got {spec!r}")
    settings = json.loads(overrides) if overrides else {}
    if not isinstance(settings, dict):
        raise ValueError(f"--model {name}: the overrides must be a JSON object, got {overrides!r}")
    return name, folder, settings


def write_stories(teller: StoryTeller, prompts: list[str], seed: int, overrides: dict) -> list[str]:
    """One story per prompt, each with its own fixed seed (the same for every model)."""
    return [
        teller.tell(prompt, teller.settings(seed=prompt_seed(seed, index), **overrides)).story
        for index, prompt in enumerate(prompts)
    ]


def reference_stories(corpus: str | Path, n: int, seed: int, val_fraction: float = 0.05) -> list[str]:
    """`n` two-sentence stories from the trainer's held-out split of `corpus`, in a seeded order."""
    _, held_out = held_out_split(Path(corpus), val_fraction)
    stories = [one_line(story) for story in held_out if count_sentences(story) == 2]
    random.Random(seed).shuffle(stories)
    return stories[:n]


def make(args: argparse.Namespace) -> None:
    models = [parse_model(spec) for spec in args.model]
    stories: dict[str, list[str]] = {}
    if args.held_out:
        if REFERENCE in {name for name, _, _ in models}:
            raise ValueError(f"with --held-out, {REFERENCE!r} names the people's stories: call the model otherwise")
        stories[REFERENCE] = reference_stories(args.held_out, args.n, args.seed)
        prompts = [first_sentence(story) for story in stories[REFERENCE]]
        models.append((REFERENCE, str(args.held_out), {}))
    else:
        prompts = load_lines(args.prompts)[: args.n]
    if len(models) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} stories per group (models, and the reference with --held-out)")
    if len({name for name, _, _ in models}) < len(models):
        raise ValueError("every --model needs its own NAME")
    for name, folder, overrides in models:
        if name in stories:  # the reference: written by people, not sampled
            continue
        stories[name] = write_stories(StoryTeller.load(folder, fallback=False), prompts, args.seed, overrides)
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


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval for a share seen `successes` times in `trials` (Wilson: sound near 0 and 1)."""
    if trials == 0:
        return 0.0, 1.0
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - spread), min(1.0, centre + spread)


def share(successes: int, trials: int) -> str:
    """'31 (52%, 95% CI 39-64%)'."""
    low, high = wilson_interval(successes, trials)
    return f"{successes} ({successes / max(trials, 1):.0%}, 95% CI {low * 100:.0f}-{high:.0%})"


def read_judgments(path: Path, letters: dict[int, dict[str, str]]) -> list[dict]:
    """The reader's judgment lines, checked against the key."""
    judgments, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            judgment = json.loads(line)
            group, marks, ranking = judgment["group"], judgment["stories"], judgment["ranking"]
            if not isinstance(marks, dict) or not isinstance(ranking, list):
                raise TypeError("stories must be an object and ranking a list")
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{where}: not a judgment ({error}); expected {{group, stories, ranking}}") from None
        if group not in letters:
            raise ValueError(f"{where}: no group {group!r} in the key")
        if group in seen:
            raise ValueError(f"{where}: group {group} is judged twice")
        seen.add(group)
        unknown = sorted((set(marks) | set(ranking)) - set(letters[group]))
        if unknown:
            raise ValueError(f"{where}: group {group} has no stor(ies) {unknown}")
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"{where}: group {group} ranks a story twice")
        for letter, mark in marks.items():
            if not isinstance(mark, dict) or not {"grammatical", "coherent"} <= set(mark):
                raise ValueError(f"{where}: story {letter} needs grammatical and coherent marks")
        judgments.append(judgment)
    return judgments


def score(args: argparse.Namespace) -> None:
    """Count one read, or pool several (`--key` and `--judgments` given once per read, in the same
    order): a model is counted by its name in every read that has it."""
    if len(args.key) != len(args.judgments):
        raise ValueError(f"{len(args.key)} --key but {len(args.judgments)} --judgments: give one of each per read")
    names: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    wins: dict[tuple[str, str], int] = {}
    for key_path, judgments_path in zip(args.key, args.judgments, strict=True):
        key = json.loads(Path(key_path).read_text(encoding="utf-8"))
        letters = {entry["group"]: entry["letters"] for entry in key["groups"]}
        for name, _, _ in key["models"]:
            if name not in counts:
                names.append(name)
                counts[name] = {"stories": 0, "grammatical": 0, "coherent": 0}
        judgments = read_judgments(Path(judgments_path), letters)
        if len(judgments) < len(letters):
            print(f"note: {judgments_path}: {len(letters) - len(judgments)} of {len(letters)} groups have no judgment")
        for judgment in judgments:
            mapping = letters[judgment["group"]]
            for letter, marks in judgment["stories"].items():
                tally = counts[mapping[letter]]
                tally["stories"] += 1
                tally["grammatical"] += bool(marks["grammatical"])
                tally["coherent"] += bool(marks["coherent"])
            ranked = [mapping[letter] for letter in judgment["ranking"]]
            for better, worse in itertools.combinations(ranked, 2):
                wins[(better, worse)] = wins.get((better, worse), 0) + 1
    if len(args.key) > 1:
        print(f"{len(args.key)} reads pooled")
    for name in names:
        tally = counts[name]
        print(
            f"{name}: {tally['stories']} stories, grammatical {share(tally['grammatical'], tally['stories'])}, "
            f"coherent setup + twist {share(tally['coherent'], tally['stories'])}"
        )
    for a, b in itertools.combinations(names, 2):
        total = wins.get((a, b), 0) + wins.get((b, a), 0)
        if total:
            print(f"{a} vs {b}: {a} better in {share(wins.get((a, b), 0), total)} of {total} groups")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    maker = commands.add_parser("make", help="generate and mix the stories")
    maker.add_argument("--model", action="append", required=True, help="NAME=FOLDER[:JSON sampling overrides]")
    maker.add_argument("--prompts", default="train/eval_prompts.txt")
    maker.add_argument(
        "--held-out",
        metavar="CORPUS",
        help="prompts from the first sentences of CORPUS's held-out stories, which join the read as 'reference'",
    )
    maker.add_argument("--n", type=int, default=60, help="prompts (one story per model each)")
    maker.add_argument("--seed", type=int, default=0)
    maker.add_argument("--out", required=True, help="folder for stories.md (what the reader sees)")
    maker.add_argument("--key", required=True, help="where the hidden key goes (keep it away from the reader)")
    scorer = commands.add_parser("score", help="count the reader's judgments")
    scorer.add_argument("--key", action="append", required=True, help="a read's key (repeat to pool reads)")
    scorer.add_argument("--judgments", action="append", required=True, help="its judgments, in --key's order")
    args = parser.parse_args()
    make(args) if args.command == "make" else score(args)


if __name__ == "__main__":
    main()
