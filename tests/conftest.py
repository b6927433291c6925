"""Shared fixtures: a tiny tokenizer and randomly initialised model, built in the test session.

Nothing here reads ../shared or the network."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from horror.config import GenerationConfig, model_preset
from horror.model import GPT
from horror.model_folder import save_model_folder
from horror.native import NativeUnavailable, load_library
from horror.storyteller import StoryTeller
from horror.tokenizer import StoryTokenizer

# Tiny models gain nothing from threads, and the CI machine is shared: one thread is fastest.
torch.set_num_threads(1)

SUBJECTS = ["My sister", "The old man", "Our dog", "The babysitter", "A stranger", "My reflection", "The nurse"]
VERBS = ["whispered", "knocked", "smiled", "waited", "laughed", "stared", "hummed"]
PLACES = ["at the door", "in the attic", "by the lake", "under my bed", "in the mirror", "at midnight"]
TWISTS = [
    "But I live alone.",
    "Nobody else could see her.",
    "The voice came from inside the closet.",
    "It was still smiling when the lights went out.",
    "Then I remembered we buried him last spring.",
    "I never had a sister.",
]


@pytest.fixture(scope="session")
def c_decoder() -> None:
    """The C decoder, compiled and loaded when a test first asks for it (not at collection).
    Tests of it request this fixture (`@pytest.mark.usefixtures("c_decoder")`) and are skipped,
    with the reason, where it cannot run; test_native.py's
    test_the_c_decoder_builds_wherever_it_should makes sure that never happens on x86-64 with a
    C compiler. A failure is cached for the session: the build is not retried by every test."""
    try:
        load_library()
    except NativeUnavailable as error:
        pytest.skip(f"C decoder unavailable: {error}")


def make_stories(count: int = 300, seed: int = 0) -> list[str]:
    """Two-sentence stories made from small parts: enough text to train a test tokenizer."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)} every night. {rng.choice(TWISTS)}"
        for _ in range(count)
    ]


@pytest.fixture(scope="session")
def tiny_stories() -> list[str]:
    return make_stories()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_stories: list[str]) -> StoryTokenizer:
    extra = ["She said “don’t” — naïve café, 😀 ¿qué? 日本語 עברית"]
    return StoryTokenizer.train(tiny_stories + extra, vocab_size=400, min_frequency=2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: StoryTokenizer) -> Path:
    """A complete model folder (random weights) with the test-tiny preset."""
    torch.manual_seed(0)
    model = GPT(model_preset("test-tiny", vocab_size=tiny_tokenizer.vocab_size)).eval()
    folder = tmp_path_factory.mktemp("tiny-model")
    save_model_folder(folder, model, tiny_tokenizer, GenerationConfig(max_new_tokens=20), card="# tiny test model\n")
    return folder


@pytest.fixture(scope="session")
def tiny_teller(tiny_model_dir: Path) -> StoryTeller:
    return StoryTeller.load(tiny_model_dir, fallback=False)


def scripted_model(
    tokenizer: StoryTokenizer, prompt_ids: list[int], script: list[int], filler: int | None = None
) -> GPT:
    """A real GPT whose weights make it write `script` after `prompt_ids`, whatever the settings.

    Only the position embeddings carry signal (one-hot per position; token embeddings and every
    residual branch are zero), and the LM head maps position p to the token due after it. The
    winning logit beats the rest by ~80, so penalties and sampling cannot change the choice.
    Inside the prompt it predicts the prompt's own next token, so a prompt whose last token was
    backed off (token healing) gets that token written again, then the script.
    """
    context_length = 64
    config = model_preset(
        "test-tiny", vocab_size=tokenizer.vocab_size, context_length=context_length, d_model=context_length, n_layers=1
    )
    model = GPT(config).eval()
    filler = tokenizer.encode(" and")[0] if filler is None else filler
    due = [filler] * context_length
    for position, token_id in enumerate([*prompt_ids[1:], *script]):
        due[position] = token_id
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.position_embedding.weight.copy_(torch.eye(context_length))
        model.ln_final.weight.fill_(1.0)
        for position, token_id in enumerate(due):
            model.lm_head.weight[token_id, position] = 10.0
        for block in model.blocks:  # keep LayerNorm well defined inside the (silenced) blocks
            block.ln_attn.weight.fill_(1.0)
            block.ln_mlp.weight.fill_(1.0)
    return model


# ----- a real browser (tests/test_app_browser.py, tests/test_app_ui.py) ---------------------------
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_WAIT_MS = 60_000  # generous: CI shares two cores
requires_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module (each test opens its own context)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def keep_screenshots(shots: list[Path]) -> None:
    """Check the screenshots hold a page, and copy them to $HORROR_SCREENSHOTS when it is set."""
    assert all(shot.stat().st_size > 10_000 for shot in shots)
    if os.environ.get("HORROR_SCREENSHOTS"):
        target = Path(os.environ["HORROR_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, target / shot.name)
