"""Time a told story at best of 1, 4 and 8: what the app's "Best of N" costs a person waiting.

Each story goes through `StoryTeller.tell` (the path the app, the CLI and the blind reads share):
one batch of N stories stopping at two sentences, ranked by confidence. Variants are interleaved
prompt by prompt, so a neighbour's load slows them all alike; compare the ratios of one run.
Prints figures only; asserts nothing.

    python bench/bench_best_of.py                        # the bundled model
    python bench/bench_best_of.py --model runs/I/model --prompts 40
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from horror.evaluate import load_lines
from horror.storyteller import StoryTeller
from train.hardware import describe_cpu

PROMPTS_FILE = Path(__file__).resolve().parent.parent / "train" / "eval_prompts.txt"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the bundled model)")
    parser.add_argument("--best-of", default="1,4,8", help="comma-separated N to time")
    parser.add_argument("--prompts", type=int, default=21, help="stories per N (one per prompt, median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(n) for n in args.best_of.split(",")]
    teller = StoryTeller.load(args.model, fallback=False)
    prompts = load_lines(PROMPTS_FILE)[: args.prompts]  # the prompt file's format: '#' lines are comments

    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {args.threads} thread(s)")
    print(f"model: {teller.source.path} ({teller.num_parameters:,} parameters), settings {teller.generation_config}")
    for n in sizes:  # warm-up: allocators, caches, the C decoder's first call
        teller.tell(prompts[0], best_of=n, seed=0)
    seconds: dict[int, list[float]] = {n: [] for n in sizes}
    for index, prompt in enumerate(prompts):
        for n in sizes:
            started = time.perf_counter()
            teller.tell(prompt, best_of=n, seed=index)
            seconds[n].append(time.perf_counter() - started)
    base = statistics.median(seconds[sizes[0]])
    for n in sizes:
        median = statistics.median(seconds[n])
        print(f"best of {n}: {median * 1000:.1f} ms per told story (median of {len(prompts)}), {median / base:.2f}x")


if __name__ == "__main__":
    main()
