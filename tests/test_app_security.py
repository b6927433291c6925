"""The app's side of SECURITY.md: user text is escaped wherever the page renders it, each
client has its own rate limit (a forged X-Forwarded-For buys no new allowance), and the queue
is bounded: requests beyond it are turned away at once and the app keeps serving.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError, Status

import app
import webui
from app_server import serve
from horror.chain import Chain
from horror.errors import UserError
from horror.exports import ChainExports
from horror.ratelimit import RateLimiter
from horror.service import StoryService
from horror.views import about_markdown, banner_html, chain_panel, story_panel

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
INJECTIONS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "<a href='javascript:alert(1)'>click</a>",
    "**bold** _it_ `code` # heading",
    "&lt;script&gt;",
]


def assert_no_live_markup(rendered: str, text: str) -> None:
    """No tag from `text` survives as a tag, and no Markdown link from it stays a link."""
    for tag in re.findall(r"<\s*(\w+)", text):
        assert not re.search(rf"<\s*{tag}\b", rendered, re.IGNORECASE), rendered
    assert not re.search(r"(?<!\\)\]\(javascript:", rendered), rendered


@pytest.mark.parametrize("text", INJECTIONS)
def test_story_panel_html_escapes_the_prompt_and_the_story(tiny_teller, text):
    service = StoryService(tiny_teller)
    for best_of in (1, 2):
        for stories in service.tell(f"{text}.", best_of, {"max_new_tokens": 4, "seed": 1}, client="client"):
            story_view, stats, ranked, _ = story_panel(stories)
            for rendered in (story_view, stats, ranked):
                assert_no_live_markup(rendered, text)


@pytest.mark.parametrize("text", INJECTIONS)
def test_chain_panel_and_exports_escape_every_sentence(tiny_teller, tmp_path, text):
    exports = ChainExports(tmp_path)
    chain = Chain().add_person_sentence(f"{text}.").add_model_sentence(f"Then {text}.")
    _, chain_view, status = chain_panel(chain, 0)
    text_file, markdown_file = exports.write(chain, "txt"), exports.write(chain, "md")
    for rendered in (chain_view, status, markdown_file.read_text()):
        assert_no_live_markup(rendered, text)
    assert text in text_file.read_text()  # the plain-text download is the story as written


@pytest.mark.parametrize("text", INJECTIONS)
def test_a_notice_quoting_a_model_name_is_escaped_in_the_banner_and_about_tab(text):
    info = {"notice": f"could not load {text!r}; serving the bundled model instead", "trained": False}
    for rendered in (banner_html(info), about_markdown(info)):
        assert_no_live_markup(rendered, text)


@pytest.mark.parametrize("text", INJECTIONS)
def test_error_toasts_escape_the_user_text_they_quote(text):
    assert_no_live_markup(webui.toast_message(UserError(f"bad seed {text!r}")), text)


class HeldScore:
    """Makes /score wait at a gate: `running` is set once a call is inside, `release` opens the gate."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.release = threading.Event()


@pytest.fixture
def held_score(tiny_teller, monkeypatch) -> HeldScore:
    held = HeldScore()
    score = tiny_teller.score

    def gated_score(*args, **kwargs):
        held.running.set()
        held.release.wait(60)
        return score(*args, **kwargs)

    monkeypatch.setattr(tiny_teller, "score", gated_score)
    yield held
    held.release.set()


def wait_for_status(job, code: Status, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while job.status().code != code:
        assert time.monotonic() < deadline, f"job never reached {code}: {job.status()}"
        time.sleep(0.02)


def test_requests_beyond_the_queue_are_turned_away_and_the_app_keeps_serving(tiny_teller, monkeypatch, held_score):
    assert (app.CONCURRENCY, app.QUEUE_SIZE) == (2, 64)  # the defaults SECURITY.md promises
    monkeypatch.setattr(app, "CONCURRENCY", 1)
    monkeypatch.setattr(app, "QUEUE_SIZE", 1)
    with serve(tiny_teller, RateLimiter(per_minute=0)) as url:
        client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        # Step by step, so the test does not depend on how fast the server moves jobs along:
        # one request running (held inside score), one waiting, then one too many.
        running = client.submit("Knock 0.", api_name="/score")
        assert held_score.running.wait(30), "the first request never started"
        waiting = client.submit("Knock 1.", api_name="/score")
        wait_for_status(waiting, Status.IN_QUEUE)
        turned_away = client.submit("Knock 2.", api_name="/score")
        with pytest.raises(QueueError, match="Queue is full! Please try again."):
            turned_away.result(timeout=30)
        held_score.release.set()
        assert running.result(timeout=30)["tokens"] > 0
        assert waiting.result(timeout=30)["tokens"] > 0
        assert client.predict("Knock again.", api_name="/score")["tokens"] > 0


def test_the_app_queue_is_bounded_by_its_settings(tiny_teller):
    demo = app.build_demo(tiny_teller, RateLimiter(per_minute=0))
    assert demo._queue.max_size == app.QUEUE_SIZE
    assert demo._queue.default_concurrency_limit == app.CONCURRENCY


def test_a_rate_limited_client_gets_a_message_and_others_are_still_served(tiny_teller):
    with serve(tiny_teller, RateLimiter(per_minute=0.001, burst=2)) as url:
        greedy = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        for _ in range(2):
            greedy.predict("Knock.", api_name="/score")
        with pytest.raises(AppError, match="Too many requests: please wait"):
            greedy.predict("Knock.", api_name="/score")
