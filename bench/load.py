"""Load test: N concurrent gradio_client users call the app's named API for T seconds.

    python bench/load.py --users 50 --seconds 60                 # starts app.py with the bundled model
    python bench/load.py --model path/to/model --users 10 --seconds 20
    python bench/load.py --url http://127.0.0.1:7860 --server-pid 1234 --users 10 --seconds 20

Prints requests/s, p50/p95/p99 latency, errors by kind, and the server's peak RSS (sampled with
psutil). Loopback only; bounded in users and seconds; it stops by itself. The app it starts runs
with rate limiting off (every user here shares one address); against --url, a rate-limited
server answers "Too many requests", counted as errors of that kind.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import psutil

ROOT = Path(__file__).resolve().parent.parent
MAX_USERS = 200
MAX_SECONDS = 600
STARTUP_SECONDS = 180
PROMPTS = [
    "I heard my mother call my name from the kitchen.",
    "The new house was perfect.",
    "My reflection blinked first.",
    "",
]


@dataclass
class LoadResult:
    users: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # of the requests that succeeded
    errors: Counter = field(default_factory=Counter)  # first line of each error message -> count
    by_endpoint: Counter = field(default_factory=Counter)
    rss_start: int | None = None
    rss_peak: int | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q) - 1]

    def summary(self) -> str:
        mib = 1 << 20
        lines = [
            f"users: {self.users}, duration: {self.seconds:.1f} s",
            f"requests: {self.requests} ({', '.join(f'{k} {v}' for k, v in sorted(self.by_endpoint.items()))})",
            f"requests/s: {self.requests / self.seconds:.2f}",
            f"latency p50/p95/p99: {self.percentile(50):.3f} / {self.percentile(95):.3f} / {self.percentile(99):.3f} s",
            f"errors: {sum(self.errors.values())}",
            *(f"  {count} x {message}" for message, count in self.errors.most_common(5)),
        ]
        if self.rss_peak is not None:
            lines.append(f"server RSS: {self.rss_start / mib:.0f} MiB at start, {self.rss_peak / mib:.0f} MiB peak")
        return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_app(model: str | None = None, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """app.py in a subprocess on a free loopback port, rate limiting off; yields (url, pid)."""
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "HORROR_RATE_LIMIT_PER_MINUTE": "0",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    if model:
        env["HORROR_MODEL"] = model
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process, lines), daemon=True).start()
    try:
        url = _wait_for_url(process, lines, port)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pump(process: subprocess.Popen, lines: queue.Queue) -> None:
    # Read the server's output as it comes (a full pipe would block the server) and hand it on.
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


def _wait_for_url(process: subprocess.Popen, lines: queue.Queue, port: int) -> str:
    """Block until the app prints that it is serving; its output so far goes in the error if not."""
    deadline = time.monotonic() + STARTUP_SECONDS
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if "Running on local URL" in line:
            return f"http://127.0.0.1:{port}/"
    raise RuntimeError(f"app.py did not start (exit code {process.poll()}):\n{''.join(seen[-30:])}")


class RssSampler(threading.Thread):
    """The peak resident memory of a process and its children, sampled until stopped."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.process, self.every = psutil.Process(pid), every
        self.stopped = threading.Event()
        self.start_rss = self.peak = self.rss()

    def rss(self) -> int:
        try:
            return sum(p.memory_info().rss for p in [self.process, *self.process.children(recursive=True)])
        except psutil.Error:
            return 0

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.peak = max(self.peak, self.rss())


def one_request(client, number: int, max_new_tokens: int) -> str:
    """One call, cycling through the three endpoints; returns the endpoint's name."""
    prompt = PROMPTS[number % len(PROMPTS)]
    endpoint = ("/story", "/chain_step", "/score")[number % 3]
    if endpoint == "/story":
        job = client.submit(prompt, max_new_tokens=max_new_tokens, api_name=endpoint)
    elif endpoint == "/chain_step":
        job = client.submit([prompt or "It was late.", "Something knocked."], api_name=endpoint)
    else:
        job = client.submit(f"{prompt} But I live alone.", api_name=endpoint)
    job.result(timeout=120)
    return endpoint


def run_load(
    url: str, users: int, seconds: float, server_pid: int | None = None, max_new_tokens: int = 24
) -> LoadResult:
    """`users` threads, one gradio_client each, calling the API back to back for `seconds`."""
    from gradio_client import Client  # imported here: `--help` stays instant

    if not 1 <= users <= MAX_USERS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"need 1 <= users <= {MAX_USERS} and 0 < seconds <= {MAX_SECONDS}")
    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load tests run against loopback only, not {url}")
    with ThreadPoolExecutor(max_workers=16) as pool:  # each client fetches the app's config first
        clients = list(
            pool.map(lambda _: Client(url, verbose=False, download_files=False, analytics_enabled=False), range(users))
        )
    sampler = RssSampler(server_pid) if server_pid else None
    result = LoadResult(users, seconds, rss_start=sampler.start_rss if sampler else None)
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds

    def user(number: int) -> None:
        count = number  # users start at different endpoints
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                endpoint = one_request(clients[number], count, max_new_tokens)
                with lock:
                    result.latencies.append(time.perf_counter() - began)
                    result.by_endpoint[endpoint] += 1
            except Exception as error:  # counted, never raised: the run goes on
                message = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
                with lock:
                    result.errors[f"{type(error).__name__}: {message}"] += 1
            count += 1

    if sampler:
        sampler.start()
    threads = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 150)  # a request may finish late
    result.seconds = time.monotonic() - started
    if sampler:
        sampler.stopped.set()
        result.rss_peak = max(sampler.peak, sampler.rss())
    with ThreadPoolExecutor(max_workers=16) as pool:  # a used client takes a second to close
        list(pool.map(lambda client: client.close(), clients))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10, help=f"concurrent clients (1-{MAX_USERS})")
    parser.add_argument("--seconds", type=float, default=20, help=f"how long to keep asking (at most {MAX_SECONDS})")
    parser.add_argument("--model", help="model folder or Hub id for the app it starts (default: bundled)")
    parser.add_argument("--url", help="a running app on loopback instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's pid, to sample its RSS")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="per /story request")
    args = parser.parse_args(argv)
    try:
        if args.url:
            result = run_load(args.url, args.users, args.seconds, args.server_pid, args.max_new_tokens)
        else:
            with running_app(args.model) as (url, pid):
                print(f"app started at {url} (pid {pid})", flush=True)
                result = run_load(url, args.users, args.seconds, pid, args.max_new_tokens)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
