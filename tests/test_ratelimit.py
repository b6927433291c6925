"""Rate limiting per client, and who the client is behind trusted proxies."""

from __future__ import annotations

import pytest

from horror.ratelimit import RateLimiter, RateLimitExceeded, client_address, trusted_proxy_count


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ----- rate limiting ------------------------------------------------------------------------------
def test_the_bucket_allows_a_burst_then_refuses_with_the_wait():
    limiter = RateLimiter(per_minute=60, burst=3, clock=FakeClock())
    for _ in range(3):
        limiter.check("1.2.3.4")
    with pytest.raises(RateLimitExceeded, match=r"wait 1 s"):
        limiter.check("1.2.3.4")


def test_the_bucket_refills_over_time_and_clients_are_separate():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=30, burst=1, clock=clock)
    limiter.check("a")
    limiter.check("b")  # another client has its own bucket
    with pytest.raises(RateLimitExceeded):
        limiter.check("a")
    clock.now += 2.0  # 30 a minute: one every 2 s
    limiter.check("a")


def test_a_refused_request_does_not_spend_anything():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    limiter.check("a")
    for _ in range(5):
        with pytest.raises(RateLimitExceeded):
            limiter.check("a")
    clock.now += 1.0
    limiter.check("a")


def test_rate_zero_turns_limiting_off():
    limiter = RateLimiter(per_minute=0, burst=1)
    assert not limiter.enabled
    for _ in range(100):
        limiter.check("a")


def test_limits_come_from_the_environment():
    limiter = RateLimiter.from_env({"HORROR_RATE_LIMIT_PER_MINUTE": "6", "HORROR_RATE_LIMIT_BURST": "2"})
    assert (limiter.per_minute, limiter.burst) == (6.0, 2)
    with pytest.raises(ValueError, match="HORROR_RATE_LIMIT"):
        RateLimiter.from_env({"HORROR_RATE_LIMIT_PER_MINUTE": "lots"})


def test_memory_stays_bounded_with_many_clients():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock, max_clients=50)
    for number in range(500):
        clock.now += 0.01
        limiter.check(f"client-{number}")
    assert len(limiter._buckets) <= 50


def test_client_address_trusts_only_the_entries_added_by_trusted_proxies():
    headers = {"X-Forwarded-For": "6.6.6.6, 9.9.9.9"}  # the caller forged 6.6.6.6; the Space's proxy added 9.9.9.9
    assert client_address(headers, "10.0.0.1", trusted_proxies=1) == "9.9.9.9"
    assert client_address(headers, "10.0.0.1", trusted_proxies=2) == "6.6.6.6"
    assert client_address(headers, "10.0.0.1", trusted_proxies=0) == "10.0.0.1"  # run locally: the socket
    assert client_address({}, "127.0.0.1", trusted_proxies=1) == "127.0.0.1"
    assert client_address({}, None) == "unknown"


def test_a_space_trusts_one_proxy_by_default():
    assert trusted_proxy_count({}) == 0 and trusted_proxy_count({"SPACE_ID": "me/horror"}) == 1
    assert trusted_proxy_count({"SPACE_ID": "me/horror", "HORROR_TRUSTED_PROXIES": "2"}) == 2
    with pytest.raises(ValueError, match="HORROR_TRUSTED_PROXIES"):
        trusted_proxy_count({"HORROR_TRUSTED_PROXIES": "yes"})
