"""Twenty clients at once through the API: every request is answered, none fails."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client

from app_server import connect, serve
from horror.ratelimit import RateLimiter

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
CLIENTS = 20
SECONDS = 3.0


def keep_asking(client: Client, number: int, deadline: float) -> list[str]:
    """One client calling the three endpoints in turn until the deadline; returns what it checked."""
    done = []
    while time.monotonic() < deadline or not done:
        step = (number + len(done)) % 3  # clients start on different endpoints
        if step == 0:
            story = client.predict(f"Visitor {number} knocked.", seed=number, api_name="/story")
            assert story["story"].startswith(f"Visitor {number} knocked.")
        elif step == 1:
            assert client.predict([f"Visitor {number} knocked.", "Nobody answered."], api_name="/chain_step")
        else:
            assert client.predict(f"Visitor {number} knocked.", api_name="/score")["tokens"] > 0
        done.append(("story", "chain_step", "score")[step])
    return done


def test_twenty_clients_at_once_all_get_answers(tiny_teller):
    with serve(tiny_teller, RateLimiter(per_minute=0)) as url, ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        clients = list(pool.map(lambda _: connect(url), range(CLIENTS)))
        started = time.monotonic()
        futures = [pool.submit(keep_asking, client, number, started + SECONDS) for number, client in enumerate(clients)]
        results = [future.result(timeout=120) for future in futures]  # re-raises any client's failure
        print(f"{sum(map(len, results))} requests from {CLIENTS} clients in {time.monotonic() - started:.1f} s")
    assert all(results) and sum(map(len, results)) >= CLIENTS
    assert {"story", "chain_step", "score"} <= {call for calls in results for call in calls}
