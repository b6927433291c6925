"""Time 55-token stories: KV cache vs the recompute-everything baseline, fp32 vs int8,
batch 1 and batch 8, all in one process through the shared `generate` path. Prints figures
and ratios; asserts nothing (machines are noisy: compare the ratios of one run).

    python bench/bench_generation.py --preset seed-15m
    python bench/bench_generation.py --model assets/model --compare-quality data/horror/writer-1.txt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from horror import generation  # noqa: E402
from horror.config import GenerationConfig, model_preset  # noqa: E402
from horror.inference import prepare_for_inference  # noqa: E402
from horror.model import GPT  # noqa: E402
from horror.model_folder import load_model_folder  # noqa: E402
from horror.tokenizer import StoryTokenizer  # noqa: E402

PROMPT = "I heard my mother call my name from the kitchen."


def time_stories(model, tokenizer, prompt_ids, batch: int, use_cache: bool, repeats: int, new_tokens: int) -> float:
    """Median seconds per batch of `batch` stories of exactly `new_tokens` tokens."""
    settings = GenerationConfig(max_new_tokens=new_tokens, allow_eos=False)
    times = []
    for repeat in range(repeats + 1):  # the first run warms up allocators and caches
        started = time.perf_counter()
        generation.generate(model, tokenizer, prompt_ids, settings.replace(seed=repeat), batch, use_cache)
        if repeat:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def perplexity(model, tokenizer, stories: list[str]) -> float:
    nll = count = 0.0
    for story in stories:
        log_probs = generation.score_continuation(model, [tokenizer.bos_id], tokenizer.encode(story) + [tokenizer.eos_id])
        nll -= sum(log_probs)
        count += len(log_probs)
    return float(torch.tensor(nll / count).exp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="seed-15m", help="random weights of this shape (ignored with --model)")
    parser.add_argument("--model", help="a model folder to time instead of a preset")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=55)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, batch 1 only")
    parser.add_argument("--compare-quality", metavar="FILE", help="stories (one per line): fp32 vs int8 perplexity")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        loaded = load_model_folder(args.model)
        model, tokenizer, name = loaded.model, loaded.tokenizer, args.model
    else:
        tokenizer = StoryTokenizer.load(Path(__file__).resolve().parent.parent / "assets" / "model")
        torch.manual_seed(0)
        model, name = GPT(model_preset(args.preset)).eval(), args.preset
    repeats = 3 if args.quick else args.repeats
    batches = [1] if args.quick else [1, 8]
    variants = {"fp32": prepare_for_inference(model, quantize=False), "int8": prepare_for_inference(model, quantize=True)}
    prompt_ids = [tokenizer.bos_id, *tokenizer.encode(PROMPT)]
    print(f"model {name}: {model.num_parameters():,} parameters; {args.new_tokens} new tokens; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {repeats}")
    print(f"{'weights':8} {'batch':>5} {'cache':>6} {'ms/story':>10} {'ms/token':>9} {'tokens/s':>9}")
    results = {}
    for batch in batches:
        for weights, variant in variants.items():
            for use_cache in (True, False):
                seconds = time_stories(variant, tokenizer, prompt_ids, batch, use_cache, repeats, args.new_tokens)
                results[weights, batch, use_cache] = seconds
                per_story = seconds / batch
                print(f"{weights:8} {batch:>5} {str(use_cache):>6} {per_story * 1000:>10.1f} "
                      f"{seconds / args.new_tokens * 1000:>9.2f} {batch * args.new_tokens / seconds:>9.0f}")
    print("ratios (same run):")
    for batch in batches:
        base = results["fp32", batch, False]
        print(f"  batch {batch}: fp32 cache vs no cache {base / results['fp32', batch, True]:.2f}x; "
              f"int8 cache vs fp32 no cache {base / results['int8', batch, True]:.2f}x; "
              f"int8 cache vs fp32 cache {results['fp32', batch, True] / results['int8', batch, True]:.2f}x")
    if args.compare_quality:
        lines = Path(args.compare_quality).read_text(encoding="utf-8").splitlines()
        stories = [line.strip() for line in lines if line.strip()][:200]
        print(f"perplexity on {len(stories)} stories of {args.compare_quality}: "
              f"fp32 {perplexity(variants['fp32'], tokenizer, stories):.3f}, "
              f"int8 {perplexity(variants['int8'], tokenizer, stories):.3f}")


if __name__ == "__main__":
    main()
