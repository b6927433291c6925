"""The command line: generate, score, info and evaluate, all through StoryTeller; convert a model folder.

    python -m horror generate "I heard a knock at the door." --n 3 --json
    python -m horror score stories.txt --json
    python -m horror info
    python -m horror evaluate --prompts train/eval_prompts.txt --train-file data/horror/writer-1.txt
    python -m horror convert old-model-folder new-model-folder

Bad input (settings out of range, missing files, a model that will not load) ends with a
one-line `error: ...` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

from horror.errors import GenerationError
from horror.model_folder import ModelLoadError, convert_model_folder
from horror.storyteller import StoryTeller

# generate's sampling flags; None (not given) keeps the model's generation_config value.
SETTING_FLAGS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "max_new_tokens",
    "seed",
)
# A line of only these is blank: the model would see nothing once control bytes are cleaned away.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\s]+")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="horror", description="Two-Sentence Horror")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_model(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", help="Hub repo id or model folder (default: $HORROR_MODEL, else bundled)")
        sub.add_argument("--revision", help="Hub revision (branch, tag or commit)")
        sub.add_argument("--json", action="store_true", help="machine-readable output (one JSON object per line)")

    generate = commands.add_parser("generate", help="write stories")
    generate.add_argument("prompt", nargs="?", default="", help="first sentence (empty: the model writes one)")
    generate.add_argument("--n", type=int, default=1, help="stories to print (sampled as one batch)")
    generate.add_argument(
        "--best-of",
        type=int,
        metavar="N",
        help="sample N stories and print the n most confident, best first (default: the model's own best_of)",
    )
    generate.add_argument("--temperature", type=float, help="0 is greedy")
    generate.add_argument("--top-k", type=int, help="0 disables")
    generate.add_argument("--top-p", type=float, help="1.0 disables")
    generate.add_argument("--min-p", type=float, help="0 disables")
    generate.add_argument("--repetition-penalty", type=float, help="1.0 disables")
    generate.add_argument("--no-repeat-ngram-size", type=int, help="0 disables")
    generate.add_argument("--max-new-tokens", type=int)
    generate.add_argument("--seed", type=int, help="same seed, same stories")
    add_model(generate)

    score = commands.add_parser("score", help="perplexity of a file of stories, one per line")
    score.add_argument("file")
    add_model(score)

    info = commands.add_parser("info", help="where the model came from, its shape, whether it is trained")
    add_model(info)

    evaluate = commands.add_parser("evaluate", help="story-quality metrics on a prompt file")
    evaluate.add_argument("--prompts", required=True, help="first sentences, one per line ('#' lines are comments)")
    evaluate.add_argument("--samples", type=int, default=3, help="stories per prompt")
    evaluate.add_argument(
        "--train-file", action="append", default=[], help="training stories, one per line, for novelty (repeatable)"
    )
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--chain-turns",
        type=int,
        default=0,
        help="also grow a story chain from each prompt, this many model sentences in a row, "
        "and report the share of clean sentences",
    )
    add_model(evaluate)

    convert = commands.add_parser("convert", help="rewrite a model folder in GPT-2's format (what transformers reads)")
    convert.add_argument("source", help="a model folder, old format or new")
    convert.add_argument("destination", nargs="?", help="where to write it (default: rewrite source in place)")
    return parser


def read_lines(path: str) -> list[str]:
    """Stripped lines of a UTF-8 text file, skipping those with nothing but spaces and control bytes."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path} does not exist or is not a file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from error
    return [line.strip() for line in text.splitlines() if _CONTROL_OR_SPACE.sub("", line)]


def load_teller(model: str | None, revision: str | None) -> StoryTeller:
    """Hub sources fall back (cache, then bundled; the library logs why); a local folder that
    will not load is an error for the user to fix, not something to paper over."""
    local_folder = model is not None and Path(model).expanduser().exists()
    teller = StoryTeller.load(model, revision, fallback=not local_folder)
    if not teller.is_trained:
        print("note: this model is UNTRAINED (random weights): expect gibberish", file=sys.stderr)
    return teller


def print_record(data: dict[str, Any], as_json: bool) -> None:
    """One JSON object per line, or `key: value` lines (lists indented below their key)."""
    if as_json:
        print(json.dumps(data, ensure_ascii=False))
        return
    for key, value in data.items():
        if isinstance(value, float):
            print(f"{key}: {value:.4g}")
        elif isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print(f"  {json.dumps(item, ensure_ascii=False) if isinstance(item, dict) else item}")
        else:
            print(f"{key}: {value}")


def run_generate(args: argparse.Namespace) -> None:
    overrides = {name: getattr(args, name) for name in SETTING_FLAGS}
    if args.best_of is not None and args.best_of < args.n:
        raise ValueError(f"--best-of ({args.best_of}) must be at least --n ({args.n})")
    teller = load_teller(args.model, args.revision)
    settings = teller.settings(**overrides, best_of=args.best_of)
    if settings.best_of > 1:  # the model's own best of N, unless --best-of says otherwise
        stories = teller.best_of(args.prompt, max(settings.best_of, args.n), settings)[: args.n]
    else:
        stories = teller.tell_many(args.prompt, args.n, settings)
    for index, story in enumerate(stories):
        if args.json:
            print_record(story.to_dict(), True)
            continue
        if index:
            print()
        print(story.story)
        print(
            f"  (confidence {story.confidence:.2f}, seed {story.seed}, "
            f"{story.new_tokens} tokens in {story.seconds * 1000:.0f} ms, stopped: {story.finish_reason})"
        )


def run_score(args: argparse.Namespace) -> None:
    stories = read_lines(args.file)
    if not stories:
        raise ValueError(f"{args.file} holds no stories (one per line)")
    teller = load_teller(args.model, args.revision)
    scores = [teller.score(story) for story in stories]
    # Aggregate over all tokens, not a mean of per-story means: long stories weigh more.
    tokens = sum(score.tokens for score in scores)
    nll = sum(score.nll_per_token * score.tokens for score in scores)
    byte_count = sum(score.bytes for score in scores)
    print_record(
        {
            "stories": len(stories),
            "tokens": tokens,
            "bytes": byte_count,
            "nll_per_token": nll / tokens,
            "perplexity": math.exp(nll / tokens),
            "bits_per_byte": nll / math.log(2) / byte_count,
        },
        args.json,
    )


def run_info(args: argparse.Namespace) -> None:
    info = load_teller(args.model, args.revision).info()
    if args.json:
        print_record(info, True)
        return
    revision = f", revision {info['revision']}" if info["revision"] else ""
    print(f"model: {info['source']} ({info['source_kind']}{revision}) at {info['path']}")
    if info["notice"]:
        print(f"notice: {info['notice']}")
    print("status: " + ("trained" if info["trained"] else "UNTRAINED (random weights: it writes gibberish)"))
    print(f"parameters: {info['parameters']:,}")
    print(f"inference: {info['inference']}")
    for key in ("d_model", "n_layers", "n_heads", "d_ff", "vocab_size", "context_length", "dropout", "tie_embeddings"):
        print(f"{key}: {info[key]}")
    print(f"tokenizer_vocab_size: {info['tokenizer_vocab_size']}")
    print("generation_config: " + json.dumps(info["generation_config"]))


def run_evaluate(args: argparse.Namespace) -> None:
    from horror.evaluate import drop_comments, evaluate_chain, evaluate_model  # only this command needs them

    prompts = drop_comments(read_lines(args.prompts))
    train_texts = [line for path in args.train_file for line in read_lines(path)] or None
    teller = load_teller(args.model, args.revision)
    summary = evaluate_model(teller, prompts, samples=args.samples, train_texts=train_texts, seed=args.seed)
    if args.chain_turns:
        summary["chain"] = evaluate_chain(teller, prompts, turns=args.chain_turns, seed=args.seed)
    print_record(summary, args.json)


def run_convert(args: argparse.Namespace) -> None:
    folder = convert_model_folder(args.source, args.destination or args.source)
    print(f"converted {args.source} -> {folder} (loads with horror and with transformers)")


COMMANDS = {
    "generate": run_generate,
    "score": run_score,
    "info": run_info,
    "evaluate": run_evaluate,
    "convert": run_convert,
}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)  # argparse itself exits 2 on malformed flags
    # Fallback notices are logged warnings; show them once, plainly, on stderr.
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError, ModelLoadError, GenerationError) as error:
        message = " ".join(str(error).split()) or type(error).__name__  # one line, whatever the error
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
