"""The command line: generate, score, info and evaluate, all through StoryTeller.

    python -m horror generate "I heard a knock at the door." --n 3 --json
    python -m horror score stories.txt --json
    python -m horror info
    python -m horror evaluate --prompts train/eval_prompts.txt --train-file data/horror/writer-1.txt
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from horror.model_folder import ModelLoadError
from horror.storyteller import GenerationError, StoryTeller

SETTING_FLAGS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "no_repeat_ngram_size",
                 "max_new_tokens", "seed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m horror", description="Two-Sentence Horror")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_model(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", help="Hub repo id or model folder (default: $HORROR_MODEL, else bundled)")
        sub.add_argument("--revision", help="Hub revision (branch, tag or commit)")
        sub.add_argument("--json", action="store_true", help="machine-readable output")

    generate = commands.add_parser("generate", help="write stories")
    generate.add_argument("prompt", nargs="?", default="", help="first sentence (empty: the model writes one)")
    generate.add_argument("--n", type=int, default=1, help="stories to write (one batch)")
    generate.add_argument("--best-of", action="store_true", help="rank the n stories by confidence")
    generate.add_argument("--temperature", type=float)
    generate.add_argument("--top-k", type=int)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--min-p", type=float)
    generate.add_argument("--repetition-penalty", type=float)
    generate.add_argument("--no-repeat-ngram-size", type=int)
    generate.add_argument("--max-new-tokens", type=int)
    generate.add_argument("--seed", type=int)
    add_model(generate)

    score = commands.add_parser("score", help="perplexity of a file of stories, one per line")
    score.add_argument("file")
    add_model(score)

    info = commands.add_parser("info", help="where the model came from and its shape")
    add_model(info)

    evaluate = commands.add_parser("evaluate", help="story-quality metrics on a prompt file")
    evaluate.add_argument("--prompts", required=True, help="first sentences, one per line")
    evaluate.add_argument("--samples", type=int, default=3, help="stories per prompt")
    evaluate.add_argument("--train-file", action="append", default=[], help="training stories (for novelty)")
    evaluate.add_argument("--seed", type=int, default=0)
    add_model(evaluate)
    return parser


def _read_lines(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
    elif isinstance(data, dict):
        for key, value in data.items():
            print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")


def run_generate(teller: StoryTeller, args: argparse.Namespace) -> None:
    overrides = {name: getattr(args, name) for name in SETTING_FLAGS}
    if args.best_of:
        stories = teller.best_of(args.prompt, args.n, **overrides)
    else:
        stories = teller.tell_many(args.prompt, args.n, **overrides)
    for index, story in enumerate(stories):
        if args.json:
            _print(story.to_dict(), True)
        else:
            print(f"{story.story}\n  (confidence {story.confidence:.2f}, seed {story.seed}, "
                  f"{story.new_tokens} tokens in {story.seconds * 1000:.0f} ms)")
            if index < len(stories) - 1:
                print()


def run_score(teller: StoryTeller, args: argparse.Namespace) -> None:
    stories = _read_lines(args.file)
    if not stories:
        raise ValueError(f"{args.file} holds no stories")
    tokens = nll = byte_count = 0.0
    for story in stories:
        score = teller.score(story)
        tokens += score.tokens
        byte_count += score.bytes
        nll += score.nll_per_token * score.tokens
    summary = {
        "stories": len(stories),
        "tokens": int(tokens),
        "nll_per_token": nll / tokens,
        "perplexity": math.exp(nll / tokens),
        "bits_per_byte": nll / math.log(2) / byte_count,
    }
    _print(summary, args.json)


def run_info(teller: StoryTeller, args: argparse.Namespace) -> None:
    info = teller.info()
    if args.json:
        _print(info, True)
        return
    status = "trained" if info["trained"] else "UNTRAINED (random weights: it writes gibberish)"
    print(f"model: {info['source']} ({info['source_kind']}{', revision ' + info['revision'] if info['revision'] else ''})")
    if info["notice"]:
        print(f"notice: {info['notice']}")
    print(f"status: {status}")
    print(f"parameters: {info['parameters']:,}")
    for key in ("d_model", "n_layers", "n_heads", "d_ff", "vocab_size", "context_length", "dropout", "tie_embeddings"):
        print(f"{key}: {info[key]}")
    card = info.get("card") or {}
    if card.get("val_loss"):
        print(f"validation loss: {card['val_loss']}")


def run_evaluate(teller: StoryTeller, args: argparse.Namespace) -> None:
    from horror.evaluate import evaluate_model

    prompts = _read_lines(args.prompts)
    train_texts = [line for path in args.train_file for line in _read_lines(path)] or None
    summary = evaluate_model(teller, prompts, samples=args.samples, train_texts=train_texts, seed=args.seed)
    if not args.json:
        summary = {k: v for k, v in summary.items() if k != "examples"}
    _print(summary, args.json)


COMMANDS = {"generate": run_generate, "score": run_score, "info": run_info, "evaluate": run_evaluate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        teller = StoryTeller.load(args.model, args.revision)
        if teller.notice:
            print(f"notice: {teller.notice}", file=sys.stderr)
        COMMANDS[args.command](teller, args)
    except (ValueError, FileNotFoundError, ModelLoadError, GenerationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
