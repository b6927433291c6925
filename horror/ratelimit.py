"""Per-client rate limiting for the app, and who the client is behind the Space's proxy."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

from horror.errors import UserError

RATE_ENV_VAR = "HORROR_RATE_LIMIT_PER_MINUTE"  # 0 turns rate limiting off
BURST_ENV_VAR = "HORROR_RATE_LIMIT_BURST"
TRUSTED_PROXIES_ENV_VAR = "HORROR_TRUSTED_PROXIES"
DEFAULT_RATE_PER_MINUTE = 30.0  # a person clicking never gets near this; a script soon does
DEFAULT_BURST = 10


class RateLimitExceeded(UserError):
    """A client asked too often; the message says how long to wait."""


class RateLimiter:
    """A token bucket per client: `burst` requests at once, refilled at `per_minute`."""

    def __init__(
        self,
        per_minute: float = DEFAULT_RATE_PER_MINUTE,
        burst: int = DEFAULT_BURST,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ):
        if per_minute < 0 or burst < 1:
            raise ValueError(f"need per_minute >= 0 and burst >= 1, got {per_minute} and {burst}")
        self.per_minute, self.burst, self.clock, self.max_clients = per_minute, burst, clock, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RateLimiter:
        """Limits from $HORROR_RATE_LIMIT_PER_MINUTE (0: off) and $HORROR_RATE_LIMIT_BURST."""
        try:
            per_minute = float(environ.get(RATE_ENV_VAR, DEFAULT_RATE_PER_MINUTE))
            burst = int(environ.get(BURST_ENV_VAR, DEFAULT_BURST))
        except ValueError as error:
            raise ValueError(f"{RATE_ENV_VAR} must be a number and {BURST_ENV_VAR} a whole number: {error}") from None
        return cls(per_minute, burst)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def check(self, client: str) -> None:
        """Spend one request of `client`'s allowance, or raise RateLimitExceeded."""
        if not self.enabled:
            return
        refill_per_second = self.per_minute / 60
        with self._lock:
            now = self.clock()
            tokens, counted = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - counted) * refill_per_second)
            if tokens < 1:
                wait = (1 - tokens) / refill_per_second
                self._buckets[client] = (tokens, now)
                raise RateLimitExceeded(
                    f"Too many requests: please wait {wait:.0f} s and try again "
                    f"(the limit is {self.per_minute:g} a minute)."
                )
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self.max_clients:
                self._forget_idle_clients(now, refill_per_second)

    def _forget_idle_clients(self, now: float, refill_per_second: float) -> None:
        # A bucket that has refilled is the same as no bucket; past that, drop the stalest ones.
        full_after = self.burst / refill_per_second
        self._buckets = {c: b for c, b in self._buckets.items() if now - b[1] < full_after}
        while len(self._buckets) > self.max_clients:
            del self._buckets[min(self._buckets, key=lambda c: self._buckets[c][1])]


def trusted_proxy_count(environ: Mapping[str, str] = os.environ) -> int:
    """How many proxies in front of the app append to X-Forwarded-For: $HORROR_TRUSTED_PROXIES,
    else 1 on a Hugging Face Space (which sets $SPACE_ID), else 0 (trust the socket only)."""
    value = environ.get(TRUSTED_PROXIES_ENV_VAR, "1" if environ.get("SPACE_ID") else "0")
    if not value.strip().isdigit():
        raise ValueError(f"{TRUSTED_PROXIES_ENV_VAR} must be a whole number of proxies, got {value!r}")
    return int(value)


def client_address(headers: Mapping[str, str], host: str | None, trusted_proxies: int = 0) -> str:
    """Who is asking. Each trusted proxy appends the address it heard from to X-Forwarded-For, so
    the caller is the entry `trusted_proxies` from the right; entries further left are whatever
    the caller sent and could be forged. With no trusted proxy, the socket's address."""
    forwarded = next((value for key, value in headers.items() if key.lower() == "x-forwarded-for"), "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if trusted_proxies and hops:
        return hops[-min(trusted_proxies, len(hops))]
    return host or "unknown"
