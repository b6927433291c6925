"""The benchmarks still run: each prints its figures for a tiny shape (they assert nothing themselves).

A benchmark is run by hand, so a change to the library it calls can break it unnoticed (a positional
argument that moved once did); these run each end to end in a few seconds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(command: str) -> str:
    """Run `python <command>` from the repository root; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, *command.split()], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.usefixtures("c_decoder")  # skipped, with the reason, where the C decoder cannot be built
def test_the_generation_benchmark_times_every_engine() -> None:
    out = run_bench("bench/bench_generation.py --preset test-tiny --repeats 1 --new-tokens 4 --batches 1,2 --threads 1")
    assert "CPU: " in out and "batch 2: cache vs no cache" in out
    for engine in ("fp32", "int8-pt", "int8-c"):
        assert f"{engine} " in out and "ms" in out


def test_the_training_benchmark_prints_tokens_per_second_and_the_peak() -> None:
    out = run_bench("bench/bench_train.py --preset test-tiny --vocab 512 --steps 1 --warmup 0 --threads 1 --quick")
    assert "matmul peak: fp32" in out and "| before: fp32" in out and "| after:" in out


def test_the_best_of_benchmark_times_each_n(tiny_model_dir) -> None:
    out = run_bench(f"bench/bench_best_of.py --model {tiny_model_dir} --best-of 1,3 --prompts 2 --threads 1")
    assert "CPU: " in out and re.search(r"^best of 1: [\d.]+ ms .* 1\.00x$", out, re.M)
    assert re.search(r"^best of 3: [\d.]+ ms per told story \(median of 2\), [\d.]+x$", out, re.M)
