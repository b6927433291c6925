"""The load and memory benchmarks, run small on the tiny model: no request fails under
concurrent users, and memory does not grow over many sequential requests.

A memory bound is not a timing: it holds however slow the machine is. Throughput and latency
are printed (pytest -s), never asserted.
"""

from __future__ import annotations

import pytest

from bench import load, memory

MIB = 1 << 20


@pytest.mark.slow
def test_ten_users_for_five_seconds_get_every_request_answered(tiny_model_dir):
    with load.running_app(str(tiny_model_dir)) as (url, pid):
        result = load.run_load(url, users=10, seconds=5, server_pid=pid, max_new_tokens=8)
    print(result.summary())
    assert result.errors == {} and result.requests >= 10
    assert set(result.by_endpoint) == {"/story", "/chain_step", "/score"}
    assert result.rss_start and result.rss_peak >= result.rss_start


def test_memory_does_not_grow_over_sequential_stories(tiny_teller):
    result = memory.measure_teller(tiny_teller, requests=300, warmup=50, max_new_tokens=4)
    print(result.summary())
    assert result.growth < 50 * MIB


@pytest.mark.parametrize(
    "argv",
    [
        ["--users", "0"],
        ["--users", "1000"],
        ["--seconds", "0"],
        ["--seconds", "3600"],
        ["--url", "http://example.com:7860/"],
    ],
)
def test_the_load_script_refuses_unbounded_or_remote_runs(capsys, argv):
    assert load.main([*argv, "--url", "http://127.0.0.1:9/"] if "--url" not in argv else argv) == 2
    assert "error:" in capsys.readouterr().err


def test_percentiles_come_from_the_successful_requests():
    result = load.LoadResult(users=2, seconds=2.0, latencies=[float(n) for n in range(1, 101)])
    result.errors["AppError: Too many requests"] = 3
    assert (result.percentile(50), result.percentile(95), result.percentile(99)) == (50.5, 95.05, 99.01)
    assert result.requests == 103
    assert "requests/s: 51.50" in result.summary() and "3 x AppError: Too many requests" in result.summary()
