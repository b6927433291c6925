"""Training throughput on this machine: the trainer's step under different settings, as tokens/s,
model FLOP/s and its share of the best matmul FLOP/s torch reaches here, all in one run (machines
differ several-fold, so only figures from one run compare). Prints figures; asserts nothing.

    python bench/bench_train.py                                    # cpu-tiny, 8K vocabulary
    python bench/bench_train.py --preset cpu-small --vocab 8192 --steps 10
    python bench/bench_train.py --preset seed-15m --vocab 17408    # on a GPU

"before" is the trainer as it was (fp32, AdamW's default foreach update, no compile); "after" is
what it does now (bf16 autocast where the hardware computes bf16 natively, fused AdamW). The
other rows change one thing at a time. Model FLOPs per token: 6 x the weights of every matmul
(the LM head included, embeddings' lookups not) + 12 x layers x d_model x context (attention),
as nanoGPT's MFU estimate counts them.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from contextlib import nullcontext

import torch

from horror.config import model_preset
from horror.model import GPT
from train.hardware import describe_cpu, has_native_bf16
from train.train import lm_loss, param_groups


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    bf16: bool = False
    adamw: str = "foreach"  # foreach (PyTorch's default) | fused
    compile: bool = False
    batch: int = 16
    context: int = 256


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """The best FLOP/s of a square matmul over a few sizes (what the model's matmuls could reach)."""
    best = 0.0
    for size in (512, 1024, 2048):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        for _ in range(repeats):
            _synchronize(device)
            started = time.perf_counter()
            torch.mm(a, b)
            _synchronize(device)
            best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def flops_per_token(model: GPT) -> float:
    config = model.config
    matmul_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * matmul_weights + 12 * config.n_layers * config.d_model * config.context_length


def time_setting(
    setting: Setting, preset: str, vocab: int, steps: int, warmup: int, device: torch.device
) -> tuple[float, float]:
    """(median tokens/s of one full training step: forward, loss, backward, clip, AdamW update;
    the model's FLOPs per token at this setting's context)."""
    torch.manual_seed(0)
    config = model_preset(preset, vocab_size=vocab, context_length=setting.context, dropout=0.0)
    model = GPT(config).to(device).train()
    step_model = torch.compile(model) if setting.compile else model
    optimizer = torch.optim.AdamW(
        param_groups(model, 0.1),
        lr=1e-3,
        betas=(0.9, 0.95),
        **({"fused": True} if setting.adamw == "fused" else {"foreach": True}),
    )
    batch = torch.randint(4, vocab, (setting.batch, setting.context + 1), device=device)
    seconds = []
    for _ in range(warmup + (3 if setting.compile else 0) + steps):
        _synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16) if setting.bf16 else nullcontext():
            loss = lm_loss(step_model, batch, pad_id=0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(device)
        seconds.append(time.perf_counter() - started)
    return setting.batch * setting.context / statistics.median(seconds[-steps:]), flops_per_token(model)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu-tiny")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="only the before / after rows")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    native_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else has_native_bf16()
    where = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{describe_cpu()}, {torch.get_num_threads()} threads"
    )
    print(f"device: {where}; torch {torch.__version__}; native bf16: {'yes' if native_bf16 else 'no'}")

    peaks = {"fp32": matmul_peak(torch.float32, device)}
    if native_bf16:
        peaks["bf16"] = matmul_peak(torch.bfloat16, device)
    print("matmul peak: " + ", ".join(f"{k} {v / 1e9:,.1f} GFLOP/s" for k, v in peaks.items()))

    model = GPT(model_preset(args.preset, vocab_size=args.vocab))
    per_token = flops_per_token(model)
    print(
        f"model: {args.preset}, vocabulary {args.vocab:,}, {model.num_parameters() / 1e6:.2f}M parameters, "
        f"{per_token / 1e6:.1f} MFLOP per token (context {model.config.context_length})"
    )

    before = Setting("before: fp32, foreach AdamW")
    after = Setting(
        "after: " + ("bf16 autocast, " if native_bf16 else "fp32, ") + "fused AdamW", bf16=native_bf16, adamw="fused"
    )
    settings = [before, after]
    if not args.quick:
        settings += [
            Setting("fp32, fused AdamW", adamw="fused"),
            dataclasses.replace(after, name=after.name + ", torch.compile", compile=True),
            dataclasses.replace(after, name=after.name + ", batch 32", batch=32),
            dataclasses.replace(after, name=after.name + ", batch 32 x context 128", batch=32, context=128),
        ]
        if native_bf16:
            settings.insert(2, Setting("bf16 autocast, foreach AdamW", bf16=True))
    print("\n| setting | tokens/s | model GFLOP/s | share of the fp32 peak | share of the bf16 peak | vs before |")
    print("|---|---|---|---|---|---|")
    baseline = None
    for setting in settings:
        tokens_per_s, setting_flops = time_setting(setting, args.preset, args.vocab, args.steps, args.warmup, device)
        baseline = baseline or tokens_per_s
        model_flops = tokens_per_s * setting_flops
        bf16_share = f"{model_flops / peaks['bf16']:.1%}" if "bf16" in peaks else "-"
        print(
            f"| {setting.name} | {tokens_per_s:,.0f} | {model_flops / 1e9:,.1f} | {model_flops / peaks['fp32']:.1%} "
            f"| {bf16_share} | {tokens_per_s / baseline:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
