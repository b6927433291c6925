"""Training throughput of a preset on this device: our loop (packed rows, SDPA attention, bf16
autocast where the hardware has it, torch.compile if the preset asks) against a seed-style loop
(the original notebook's: one story per row padded to a fixed length, attention written out by
hand, fp32, no compile), in one process. Prints figures and the ratio; asserts nothing.

    python bench/bench_train.py --config train/configs/cpu.json --threads 1
    python bench/bench_train.py --config train/configs/seed-15m.json --steps 20     # on a GPU

Tokens/s counts real tokens only (padding is work, not progress). Story lengths come from the
preset's data, tokenised with --tokenizer; if the data cannot be read (say, a Hub id offline),
lengths are drawn from a TinyStories-like distribution and the output says so.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import types
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from horror.config import model_preset  # noqa: E402
from horror.model import GPT  # noqa: E402
from horror.tokenizer import StoryTokenizer  # noqa: E402
from train import data  # noqa: E402
from train.run_config import load_config  # noqa: E402
from train.train import lm_loss, param_groups  # noqa: E402

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def manual_attention(self, x: torch.Tensor, cache=None, layer: int = 0) -> torch.Tensor:
    """The seed notebook's attention: scores, a causal mask, softmax, weighted sum (no fused kernel)."""
    batch, steps, d_model = x.shape
    q, k, v = self.qkv(x).view(batch, steps, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
    mask = torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
    weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return self.resid_dropout(self.proj((weights @ v).transpose(1, 2).reshape(batch, steps, d_model)))


def story_lengths(args, cfg, phase: str) -> tuple[list[np.ndarray], str]:
    """Token sequences with the real length distribution (ids are random: only lengths matter here)."""
    vocab = cfg.vocab_size
    rng = np.random.default_rng(0)
    try:
        corpus = data.build_corpus(getattr(cfg, f"{phase}_sources"), cfg.val_fraction, cfg.seed)
        tokenizer = StoryTokenizer.load(args.tokenizer)
        stories = corpus.train[: args.max_stories]
        lengths = [len(ids) + 2 for ids in tokenizer.encode_batch(stories)]
        origin = f"{len(lengths):,} {phase} stories of the preset's data"
    except (OSError, ValueError) as error:
        lengths = np.clip(rng.lognormal(np.log(170), 0.45, args.max_stories), 24, 600).astype(int).tolist()
        origin = f"{len(lengths):,} synthetic TinyStories-like lengths (data unreadable: {str(error)[:80]})"
    return [rng.integers(4, vocab, size=n) for n in lengths], origin


def time_loop(model, batches: list[np.ndarray], device, autocast_dtype, steps: int, warmup: int, pad_id: int,
              lr: float) -> tuple[float, float]:
    """(real tokens per second, padding share) over `steps` optimizer steps after `warmup`."""
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=lr)
    model.train()
    real = padded = 0
    elapsed = 0.0
    for step in range(warmup + steps):
        rows = batches[step % len(batches)]
        batch = torch.from_numpy(rows).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        context = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with context:
            loss = lm_loss(model, batch, pad_id)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            elapsed += time.perf_counter() - started
            real += int((rows[:, 1:] != pad_id).sum())
            padded += rows[:, 1:].size
    return real / elapsed, 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="train/configs/cpu.json")
    parser.add_argument("--phase", choices=["pretrain", "finetune"], default="pretrain")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--tokenizer", default="assets/model", help="tokenizer for the story lengths")
    parser.add_argument("--max-stories", type=int, default=4000)
    parser.add_argument("--seed-batch", type=int, default=0, help="stories per seed-style step (0: the preset's rows)")
    args, overrides = parser.parse_known_args()
    cfg = load_config(args.config, overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    phase = getattr(cfg, args.phase)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported() and cfg.mixed_precision in ("auto", "bf16")
    config = model_preset(cfg.model_preset, vocab_size=cfg.vocab_size, **cfg.model_overrides)
    row = config.context_length + 1
    pad_id = 0
    sequences, origin = story_lengths(args, cfg, args.phase)
    rng = np.random.default_rng(1)

    # Ours: what train.py does, minus the bookkeeping.
    low, high = (cfg.finetune_min_tokens, cfg.finetune_max_tokens) if args.phase == "finetune" else (2, row - 1)
    kept = data.filter_by_length(sequences, low, high)
    pack = data.pack_whole if args.phase == "finetune" else data.pack_stream
    rows = pack(kept, row, pad_id, seed=0)
    ours_batches = [rows[rng.choice(len(rows), phase.batch_size)] for _ in range(8)]
    torch.manual_seed(0)
    model = GPT(config).to(device)
    compiled = torch.compile(model) if cfg.compile else model
    ours, ours_padding = time_loop(compiled, ours_batches, device, torch.bfloat16 if bf16 else None, args.steps,
                                   args.warmup + (3 if cfg.compile else 0), pad_id, phase.lr)

    # Seed-style: each story alone in a row, padded to the longest allowed (the notebook padded
    # pretraining stories to 256 and fine-tuning ones to 50), manual attention, fp32.
    seed_row = row if args.phase == "pretrain" else cfg.finetune_max_tokens
    seed_batch = args.seed_batch or phase.batch_size
    padded = np.full((len(kept), seed_row), pad_id, dtype=np.int64)
    for i, ids in enumerate(kept):
        padded[i, : len(ids)] = ids[:seed_row]
    seed_batches = [padded[rng.choice(len(padded), seed_batch)] for _ in range(8)]
    torch.manual_seed(0)
    seed_model = GPT(config).to(device)
    for block in seed_model.blocks:
        block.attn.forward = types.MethodType(manual_attention, block.attn)
    seed, seed_padding = time_loop(seed_model, seed_batches, device, None, args.steps, args.warmup, pad_id, phase.lr)

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; preset {Path(args.config).stem}, model {cfg.model_preset} "
          f"({model.num_parameters() / 1e6:.2f}M parameters, vocab {cfg.vocab_size}), phase {args.phase}")
    print(f"data: {origin}, mean {np.mean([len(s) for s in kept]):.0f} tokens, {len(kept):,} kept")
    print(f"ours:       {ours:10,.0f} tokens/s  (packed rows of {row}, batch {phase.batch_size}, SDPA, "
          f"{'bf16' if bf16 else 'fp32'}, compile {'on' if cfg.compile else 'off'}; {ours_padding:.1%} padding)")
    print(f"seed-style: {seed:10,.0f} tokens/s  (one story per row padded to {seed_row}, batch {seed_batch}, "
          f"manual attention, fp32, no compile; {seed_padding:.1%} padding)")
    print(f"ratio:      {ours / seed:10.2f}x")
    if device.type == "cuda":
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        flops_per_token = 6 * model.num_parameters() + 12 * config.n_layers * config.d_model * config.context_length
        if peak:
            print(f"MFU (vs {peak / 1e12:.0f} TFLOPS bf16 peak): ours {ours * flops_per_token / peak:.1%}, "
                  f"seed-style {seed * flops_per_token / peak:.1%}")


if __name__ == "__main__":
    main()
