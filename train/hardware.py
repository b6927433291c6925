"""What this machine can do: the CPU's name (figures from different CPUs differ several-fold,
so every benchmark prints it) and whether it computes bf16 natively (where bf16 autocast pays)."""

from __future__ import annotations

from pathlib import Path

import torch

# x86 flags for bf16 dot products in hardware (Zen 4, Sapphire Rapids and later); without them
# oneDNN emulates bf16 and autocast is slower than fp32.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def describe_cpu() -> str:
    """The CPU's name, family/model and L3 size, as Linux reports them."""
    fields = _cpuinfo()
    try:
        level3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        level3 = "?"
    if not fields:
        return "unknown CPU"
    return (
        f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')}, "
        f"model {fields.get('model', '?')}), L3 {level3}"
    )


def has_native_bf16(cpuinfo_flags: str | None = None) -> bool:
    """True where the CPU has bf16 instructions (read from /proc/cpuinfo's flags)."""
    flags = (cpuinfo_flags if cpuinfo_flags is not None else _cpuinfo().get("flags", "")).split()
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def training_precision(requested: str) -> str:
    """Resolve `mixed_precision: auto`: bf16 on a CUDA GPU with bf16 or a CPU with native bf16, else fp32 ("no")."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if has_native_bf16() else "no"
