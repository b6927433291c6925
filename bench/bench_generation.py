"""Time 55-token stories through the shared `generate` path: KV cache vs the recompute-everything
baseline; plain fp32 vs int8 in PyTorch (fbgemm) vs int8 in the C decoder with its C sampler
(what StoryTeller serves on CPU), and the C decoder with PyTorch's sampler (cached only: what the
C sampler saves); batch 1 and batch 8; in one process.

Variants are interleaved repeat by repeat, so a neighbour's load slows them all alike; compare the
ratios of one run. CPU time (all threads of this process) is printed beside wall time because it
moves less on a shared machine. Prints figures only; asserts nothing.

    python bench/bench_generation.py                      # seed-15m shape, random weights
    python bench/bench_generation.py --quick --threads 1
    python bench/bench_generation.py --model assets/model --compare-quality stories.txt
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

from horror import generation
from horror.config import GenerationConfig, model_preset
from horror.hub import BUNDLED_MODEL_DIR
from horror.inference import is_quantized, prepare_for_inference
from horror.model import GPT
from horror.model_folder import load_model_folder
from horror.native import NativeGPT
from horror.sampling import choose_next_and_log_probs
from horror.tokenizer import StoryTokenizer
from train.hardware import describe_cpu

PROMPT = "I heard my mother call my name from the kitchen."


PT_SAMPLER = "int8-c/pt-sampler"  # the C decoder with PyTorch's sampler: timed with the cache only


def load(args: argparse.Namespace) -> tuple[GPT, StoryTokenizer, str]:
    if args.model:
        loaded = load_model_folder(args.model)
        return loaded.model, loaded.tokenizer, args.model
    tokenizer = StoryTokenizer.load(BUNDLED_MODEL_DIR / "tokenizer.json")
    config = model_preset(args.preset)
    if config.vocab_size < tokenizer.vocab_size:  # a test preset's small table would not hold the prompt's ids
        config = model_preset(args.preset, vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    return GPT(config).eval(), tokenizer, f"{args.preset} (random weights)"


def time_variants(runs: dict, repeats: int) -> dict:
    """Median (wall, cpu) seconds per call of each zero-argument function, interleaved."""
    for run in runs.values():  # warm-up: allocators, caches, lazy initialisation
        run(0)
    wall: dict = {key: [] for key in runs}
    cpu: dict = {key: [] for key in runs}
    for repeat in range(1, repeats + 1):
        for key, run in runs.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            run(repeat)
            wall[key].append(time.perf_counter() - wall_start)
            cpu[key].append(time.process_time() - cpu_start)
    return {key: (statistics.median(wall[key]), statistics.median(cpu[key])) for key in runs}


def story_runner(
    model: GPT, tokenizer: StoryTokenizer, prompt_ids: list[int], batch: int, use_cache: bool, new_tokens: int
):
    settings = GenerationConfig(max_new_tokens=new_tokens, allow_eos=False)  # default sampling, fixed length

    def run(seed: int) -> None:
        generation.generate(model, tokenizer, prompt_ids, settings.replace(seed=seed), batch, use_cache=use_cache)

    return run


def forward_runner(model: GPT, prompt_ids: list[int], steps: int):
    """One forward pass: a single token after the cached prompt (steps=1), or a whole window."""
    context_length = model.config.context_length

    def run(repeat: int) -> None:
        with torch.inference_mode():
            if steps == 1:
                cache = model.new_cache(1)
                model(torch.tensor([prompt_ids]), cache, last_only=True)
                started = time.perf_counter()
                model(torch.tensor([[prompt_ids[-1]]]), cache, last_only=True)
                run.seconds.append(time.perf_counter() - started)
            else:
                ids = torch.tensor([(prompt_ids * context_length)[:context_length]])
                started = time.perf_counter()
                model(ids, last_only=True)
                run.seconds.append(time.perf_counter() - started)

    run.seconds = []
    return run


def logit_difference(reference: GPT, other: GPT, token_ids: list[int]) -> tuple[float, float, float]:
    """(max |diff|, std of the reference logits, share of positions with the same best token)."""
    with torch.inference_mode():
        ids = torch.tensor([token_ids[-reference.config.context_length :]])
        expected, got = reference(ids)[0], other(ids)[0]
    same_best = (expected.argmax(-1) == got.argmax(-1)).float().mean().item()
    return (expected - got).abs().max().item(), expected.std().item(), same_best


def perplexity(model: GPT, tokenizer: StoryTokenizer, stories: list[str]) -> float:
    """exp(mean NLL per token) of whole stories (<BOS> story <EOS>), through score_continuation."""
    nll, count = 0.0, 0
    for story in stories:
        log_probs = generation.score_continuation(
            model, [tokenizer.bos_id], tokenizer.encode(story) + [tokenizer.eos_id]
        )
        nll -= sum(log_probs)
        count += len(log_probs)
    return math.exp(nll / count)


def compare_quality(variants: dict, tokenizer: StoryTokenizer, path: str, limit: int) -> None:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    stories = [line.strip() for line in lines if line.strip()][:limit]
    fp32 = variants["fp32"]
    print(f"quality on {len(stories)} stories of {path}:")
    print(
        "  perplexity "
        + ", ".join(f"{name} {perplexity(model, tokenizer, stories):.3f}" for name, model in variants.items())
    )
    for name, model in variants.items():
        if name == "fp32":
            continue
        worst, agree = 0.0, []
        for story in stories[:50]:
            diff, _, same_best = logit_difference(fp32, model, [tokenizer.bos_id, *tokenizer.encode(story)])
            worst, agree = max(worst, diff), agree + [same_best]
        print(
            f"  {name} logits over {len(agree)} stories: max |{name} - fp32| {worst:.4f}; "
            f"same best token at {statistics.mean(agree):.1%} of positions"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="seed-15m", help="random weights of this shape (ignored with --model)")
    parser.add_argument("--model", help="a model folder to time instead of a preset")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant (median reported)")
    parser.add_argument("--new-tokens", type=int, default=55)
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, batch 1 only")
    parser.add_argument("--compare-quality", metavar="FILE", help="stories, one per line: perplexity of each variant")
    parser.add_argument("--quality-stories", type=int, default=200, help="how many stories of FILE to score")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else args.repeats
    batches = [1] if args.quick else [int(b) for b in args.batches.split(",")]

    model, tokenizer, name = load(args)
    started = time.perf_counter()
    variants = {
        "fp32": prepare_for_inference(model, quantize=False),
        "int8-pt": prepare_for_inference(model, quantize=True, native=False),
        "int8-c": prepare_for_inference(model, quantize=True, native=True),
    }
    prepare_seconds = time.perf_counter() - started
    if not isinstance(variants["int8-c"], NativeGPT):
        print("note: the C decoder is unavailable here (see the log line above); timing PyTorch only")
        del variants["int8-c"]
    if not is_quantized(variants["int8-pt"]):
        print("note: int8 kernels unavailable in this torch build; 'int8-pt' below is fp32")
    prompt_ids = [tokenizer.bos_id, *tokenizer.encode(PROMPT)]
    load_average = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"model {name}: {model.num_parameters():,} parameters; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {os.cpu_count()} CPUs, load average {load_average}"
    )
    print(f"CPU: {describe_cpu()}")
    print(
        f"{args.new_tokens} new tokens after a {len(prompt_ids)}-token prompt; median of {repeats}; "
        f"variants prepared in {prepare_seconds:.2f} s (int8-pt: PyTorch + fbgemm, int8-c: the C decoder)"
    )
    for weights in variants:
        if weights != "fp32":
            diff, spread, same_best = logit_difference(variants["fp32"], variants[weights], prompt_ids)
            print(
                f"{weights} vs fp32 logits on the prompt: max |diff| {diff:.4f} (logit std {spread:.3f}), "
                f"same best token at {same_best:.0%} of positions"
            )

    with_pt_sampler = None
    if "int8-c" in variants:  # what the C sampler saves: the same decoder with PyTorch's sampler
        with_pt_sampler = prepare_for_inference(model, quantize=True, native=True)
        with_pt_sampler.choose_next = choose_next_and_log_probs
    runs = {}
    for batch in batches:
        for weights in variants:
            for use_cache in (True, False):
                runs[weights, batch, use_cache] = story_runner(
                    variants[weights], tokenizer, prompt_ids, batch, use_cache, args.new_tokens
                )
        if with_pt_sampler is not None:
            runs[PT_SAMPLER, batch, True] = story_runner(
                with_pt_sampler, tokenizer, prompt_ids, batch, True, args.new_tokens
            )
    results = time_variants(runs, repeats)
    print(
        f"\n{'weights':17} {'batch':>5} {'cache':>5} {'ms/story':>9} {'ms/step':>8} {'tokens/s':>9} {'cpu ms/story':>13}"
    )
    for (weights, batch, use_cache), (wall, cpu) in results.items():
        print(
            f"{weights:17} {batch:>5} {'yes' if use_cache else 'no':>5} {wall / batch * 1000:>9.1f} "
            f"{wall / args.new_tokens * 1000:>8.2f} {batch * args.new_tokens / wall:>9.0f} {cpu / batch * 1000:>13.1f}"
        )

    print("\nspeed-ups (wall time, same run):")
    for batch in batches:

        def ratio(slow: tuple, fast: tuple) -> str:
            return f"{results[slow][0] / results[fast][0]:.2f}x"

        baseline, fp32_cached = ("fp32", batch, False), ("fp32", batch, True)
        print(
            f"  batch {batch}: cache vs no cache: "
            + ", ".join(f"{w} {ratio((w, batch, False), (w, batch, True))}" for w in variants)
        )
        for weights in variants:
            if weights != "fp32":
                print(
                    f"  batch {batch}: {weights}+cache vs fp32 no cache {ratio(baseline, (weights, batch, True))}, "
                    f"vs fp32+cache {ratio(fp32_cached, (weights, batch, True))}"
                )
        if "int8-c" in variants:
            print(
                f"  batch {batch}: int8-c vs int8-pt (both cached) "
                f"{ratio(('int8-pt', batch, True), ('int8-c', batch, True))}"
            )
            print(
                f"  batch {batch}: int8-c with its C sampler vs with PyTorch's (both cached) "
                f"{ratio((PT_SAMPLER, batch, True), ('int8-c', batch, True))}"
            )

    print(
        "\none forward pass (median ms): the decode step behind each cached token, and a whole "
        f"{model.config.context_length}-token window (a long prompt, or one no-cache step)"
    )
    for weights, variant in variants.items():
        step, window = forward_runner(variant, prompt_ids, 1), forward_runner(variant, prompt_ids, 0)
        for repeat in range(5 * repeats):  # a step is short: more samples of it
            step(repeat)
            if repeat < repeats:
                window(repeat)
        print(
            f"  {weights:7} 1 token after {len(prompt_ids)}: {statistics.median(step.seconds) * 1000:7.2f} ms   "
            f"{model.config.context_length} tokens: {statistics.median(window.seconds) * 1000:7.1f} ms"
        )
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    if args.compare_quality:
        print()
        compare_quality(variants, tokenizer, args.compare_quality, args.quality_stories)


if __name__ == "__main__":
    main()
