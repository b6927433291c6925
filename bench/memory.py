"""Memory over many requests: resident memory (RSS) before and after N sequential stories.

    python bench/memory.py                        # 2,000 StoryTeller.tell calls, bundled model
    python bench/memory.py --requests 2000 --api  # and 2,000 /story calls to app.py in a subprocess

A leak shows as growth that keeps rising with N; a one-off rise (allocator arenas, caches
filling) is paid during the warm-up, which is not counted. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import sys
from dataclasses import dataclass

import psutil

from horror.storyteller import StoryTeller

MIB = 1 << 20
PROMPTS = ["I heard my mother call my name from the kitchen.", "The new house was perfect.", ""]


@dataclass
class MemoryResult:
    where: str
    requests: int
    rss_before: int  # after the warm-up
    rss_after: int

    @property
    def growth(self) -> int:
        return self.rss_after - self.rss_before

    def summary(self) -> str:
        return (
            f"{self.where}: {self.requests} requests, RSS {self.rss_before / MIB:.1f} MiB before, "
            f"{self.rss_after / MIB:.1f} MiB after, growth {self.growth / MIB:+.1f} MiB"
        )


def rss(pid: int | None = None) -> int:
    return psutil.Process(pid).memory_info().rss


def measure_teller(teller: StoryTeller, requests: int, warmup: int = 50, max_new_tokens: int = 8) -> MemoryResult:
    """RSS of this process around `requests` sequential `tell` calls (after `warmup` more)."""
    for number in range(warmup):
        teller.tell(PROMPTS[number % len(PROMPTS)], max_new_tokens=max_new_tokens, seed=number)
    gc.collect()
    before = rss()
    for number in range(requests):
        teller.tell(PROMPTS[number % len(PROMPTS)], max_new_tokens=max_new_tokens, seed=number)
    gc.collect()
    return MemoryResult("StoryTeller.tell", requests, before, rss())


def measure_api(url: str, server_pid: int, requests: int, warmup: int = 50, max_new_tokens: int = 8) -> MemoryResult:
    """The server's RSS around `requests` sequential /story calls from one gradio_client."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
    try:
        for number in range(warmup):
            client.predict(PROMPTS[number % len(PROMPTS)], max_new_tokens=max_new_tokens, api_name="/story")
        before = rss(server_pid)
        for number in range(requests):
            client.predict(PROMPTS[number % len(PROMPTS)], max_new_tokens=max_new_tokens, api_name="/story")
        return MemoryResult("API /story (server process)", requests, before, rss(server_pid))
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--model", help="model folder or Hub id (default: bundled)")
    parser.add_argument("--api", action="store_true", help="also measure the app's server through /story")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 100_000:
        parser.error("--requests must be between 1 and 100000")

    teller = StoryTeller.load(args.model)
    print(measure_teller(teller, args.requests, args.warmup, args.max_new_tokens).summary(), flush=True)
    if args.api:
        from bench.load import running_app

        with running_app(args.model) as (url, pid):
            print(measure_api(url, pid, args.requests, args.warmup, args.max_new_tokens).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
