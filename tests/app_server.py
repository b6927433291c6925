"""Serve the app on a free local port for the API, concurrency and browser tests."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from tests

from gradio_client import Client  # noqa: E402

import app  # noqa: E402  (after the environment is set)
from horror.ratelimit import RateLimiter  # noqa: E402
from horror.storyteller import StoryTeller  # noqa: E402


def connect(url: str, **options) -> Client:
    """A quiet gradio_client for `url`: no analytics, no file downloads."""
    return Client(url, verbose=False, download_files=False, analytics_enabled=False, **options)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(teller: StoryTeller, rate_limiter: RateLimiter | None = None) -> Iterator[str]:
    """The app around `teller`, launched in a background thread; yields its URL."""
    demo = app.build_demo(teller, rate_limiter)
    app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
