"""A real headless Chromium plays with the app: a story, a story chain with undo, retry and edit,
a download, a second visitor with a chain of their own. Screenshots go to the test's tmp_path
(and to $HORROR_SCREENSHOTS too, when set, to look at them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_server import serve
from conftest import BROWSER_WAIT_MS, keep_screenshots, requires_chromium
from horror.ratelimit import RateLimiter

WAIT_MS = BROWSER_WAIT_MS

pytestmark = [
    pytest.mark.browser,
    requires_chromium,
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated"),
]


def test_a_visitor_tells_a_story_and_plays_a_chain(tiny_teller, browser, tmp_path):
    from playwright.sync_api import expect

    shots = []

    def screenshot(page, name: str) -> None:
        shots.append(tmp_path / f"{len(shots) + 1:02d}-{name}.png")
        page.screenshot(path=shots[-1], full_page=True)

    with serve(tiny_teller, RateLimiter(per_minute=0)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page.goto(url)
        expect(page.get_by_label("First sentence (optional)")).to_be_visible(timeout=WAIT_MS)
        screenshot(page, "home")

        # A story, streamed, with its confidence and seed.
        page.get_by_label("First sentence (optional)").fill("The lake was calm <b>tonight</b>.")
        page.get_by_role("button", name="Generate", exact=True).click()
        expect(page.locator("#story-stats")).to_contain_text("How sure", timeout=WAIT_MS)
        expect(page.locator("#story-view")).to_contain_text("The lake was calm <b>tonight</b>.")  # shown, not parsed
        expect(page.locator("#story-stats")).to_contain_text("seed")
        screenshot(page, "story")

        # Best of three, ranked.
        page.get_by_label("Best of N", exact=False).first.fill("3")
        page.get_by_label("Best of N", exact=False).first.press("Enter")
        page.get_by_role("button", name="↻ Again", exact=True).click()
        expect(page.locator("#ranked li")).to_have_count(3, timeout=WAIT_MS)
        expect(page.locator("#ranked li").first).to_be_hidden()  # folded: the best is shown above
        page.locator("#ranked summary").click()
        expect(page.locator("#ranked li").first).to_be_visible()
        screenshot(page, "best-of-3")

        # A story chain: three turns, then undo, retry and an edit.
        page.get_by_role("tab", name="Story chain").click()
        turns = page.locator("#chain-view li.turn")
        box = page.get_by_label("Your sentence")
        box.fill("The lights flickered twice before dinner. Then they went out.")
        box.press("Enter")  # turn 1 (you) + the model's reply; the second sentence waits in the box
        expect(turns).to_have_count(2, timeout=WAIT_MS)
        expect(box).to_have_value("Then they went out.")
        expect(turns.nth(0)).to_contain_text("The lights flickered twice before dinner.")
        expect(turns.nth(1)).to_have_class("turn model")
        page.get_by_role("button", name="Add my sentence").click()  # turn 2
        expect(turns).to_have_count(4, timeout=WAIT_MS)
        page.get_by_role("button", name="Model's turn").click()  # turn 3: the model twice in a row
        expect(turns).to_have_count(5, timeout=WAIT_MS)
        screenshot(page, "chain-three-turns")

        page.get_by_role("button", name="Undo").click()
        expect(turns).to_have_count(4, timeout=WAIT_MS)
        before_retry = turns.nth(3).inner_text()
        page.get_by_role("button", name="Retry model").click()
        expect(turns.nth(3)).not_to_have_text(before_retry, timeout=WAIT_MS)
        expect(turns).to_have_count(4)
        expect(turns.nth(3)).to_have_class("turn model")

        page.get_by_text("Edit a sentence").click()
        page.get_by_label("Sentence number").fill("1")
        page.get_by_label("Sentence number").press("Enter")
        expect(page.get_by_label("New text")).to_have_value(
            "The lights flickered twice before dinner.", timeout=WAIT_MS
        )
        page.get_by_label("New text").fill("The lights flickered three times before dinner.")
        page.get_by_role("button", name="Save edit").click()
        expect(turns.nth(0)).to_contain_text("three times", timeout=WAIT_MS)
        screenshot(page, "chain-after-undo-retry-edit")

        with page.expect_download(timeout=WAIT_MS) as download:
            page.get_by_role("button", name="Download as text").click()
        exported = Path(download.value.path()).read_text()
        assert exported.startswith("The lights flickered three times before dinner. ")
        assert " Then they went out. " in exported and exported.endswith("\n")

        # Undoing everything must not break anything; an empty chain refuses a retry politely.
        for remaining in (3, 2, 1, 0):
            page.get_by_role("button", name="Undo").click()
            expect(turns).to_have_count(remaining, timeout=WAIT_MS)
        page.get_by_role("button", name="Retry model").click()
        expect(page.get_by_text("nothing to retry")).to_be_visible(timeout=WAIT_MS)

        # A second visitor (another browser: the chain lives in each browser's storage) starts
        # with an empty chain of their own.
        other = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        other.goto(url)
        other.get_by_role("tab", name="Story chain").click()
        expect(other.locator("#chain-view")).to_contain_text("No sentences yet", timeout=WAIT_MS)

        page.get_by_role("tab", name="About").click()
        expect(page.get_by_text("Parameters", exact=True)).to_be_visible(timeout=WAIT_MS)
        screenshot(page, "about")

    keep_screenshots(shots)
