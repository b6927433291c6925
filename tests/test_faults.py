"""Faults where the model comes from: a Hub that stalls, a repo or revision that does not exist,
and model folders that are truncated, corrupt or inconsistent. Each ends in a clear message,
and the StoryTeller either serves the bundled model with `notice` saying why or, without
fallback, raises ModelLoadError with the reason.

The "Hub" is a stand-in HTTP server on 127.0.0.1 that answers as the real one does (404 with its
X-Error-Code header) or accepts the request and never answers. test_hub.py covers an
unreachable Hub, the Hub cache and offline mode; test_storyteller.py the errors without fallback.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

from horror import hub, storyteller
from horror.model_folder import ModelLoadError
from horror.storyteller import StoryTeller

REPO = "someone/two-sentence-horror"
HUB_TIMEOUT = 0.5


class FakeHub(ThreadingHTTPServer):
    """Answers every request the way `behaviour` says: "stall", or an X-Error-Code for a 404."""

    daemon_threads = True

    def __init__(self, behaviour: str):
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.behaviour = behaviour
        self.release = threading.Event()  # a stalled request is held until the test ends
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if self.path.startswith("/api/agent-harnesses"):  # huggingface_hub's own side request
            self.send_error(404)
            return
        self.server.paths.append(self.path)
        if self.server.behaviour == "stall":
            self.server.release.wait(60)
            return
        body = json.dumps({"error": "not found"}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", self.server.behaviour)
        self.send_header(
            "X-Error-Message", "Repository not found" if self.server.behaviour == "RepoNotFound" else "Invalid rev id"
        )
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def bundled_is_tiny(monkeypatch, tmp_path, tiny_model_dir) -> Path:
    """The tiny model stands in for the bundled one; the Hub cache is empty; the Hub timeout short."""
    monkeypatch.setattr(hub, "BUNDLED_MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(storyteller, "BUNDLED_MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(hub, "HUB_TIMEOUT_SECONDS", HUB_TIMEOUT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for name in ("HORROR_MODEL", "HORROR_MODEL_REVISION", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return tiny_model_dir


@pytest.fixture
def fake_hub(request, monkeypatch, bundled_is_tiny) -> Iterator[FakeHub]:
    server = FakeHub(request.param)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


HUB_FAULTS = {  # what the stand-in does, the revision asked for, what the notice must say
    "stall": (None, "ReadTimeout"),
    "RepoNotFound": (None, "RepositoryNotFoundError"),
    "RevisionNotFound": ("no-such-branch", "RevisionNotFoundError"),
}


@pytest.mark.parametrize("fake_hub", HUB_FAULTS, indirect=True)
def test_a_hub_fault_serves_the_bundled_model_with_a_notice(fake_hub, bundled_is_tiny):
    revision, reason = HUB_FAULTS[fake_hub.behaviour]
    started = time.monotonic()
    teller = StoryTeller.load(REPO, revision)
    # A stalled Hub costs the timeout, not a hang: far below the 60 s the stand-in would hold on.
    assert time.monotonic() - started < 20 * HUB_TIMEOUT + 5
    assert fake_hub.paths, "the request reached the stand-in Hub"
    assert (teller.source.kind, teller.source.path) == ("bundled", bundled_is_tiny)
    assert f"could not download {REPO!r}" in teller.notice and reason in teller.notice
    assert "serving the bundled model instead" in teller.notice
    assert teller.info()["notice"] == teller.notice
    assert teller.tell("It knocked.", max_new_tokens=4, seed=0).story.startswith("It knocked.")


@pytest.mark.parametrize("fake_hub", HUB_FAULTS, indirect=True)
def test_without_fallback_a_hub_fault_is_a_model_load_error_with_the_reason(fake_hub):
    revision, reason = HUB_FAULTS[fake_hub.behaviour]
    with pytest.raises(ModelLoadError, match=reason):
        StoryTeller.load(REPO, revision, fallback=False)


@pytest.mark.parametrize("fake_hub", ["RevisionNotFound"], indirect=True)
def test_the_notice_names_the_revision_that_was_asked_for(fake_hub):
    assert f"{REPO!r}@no-such-branch" in StoryTeller.load(REPO, "no-such-branch").notice


def write_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep is not None else len(data) // 2])


FOLDER_FAULTS = {  # how to break a copy of the tiny model, what the notice must say
    "weights cut in half": (lambda f: truncate(f / "model.safetensors"), "corrupt or truncated"),
    "weights cut inside the header": (lambda f: truncate(f / "model.safetensors", 20), "corrupt or truncated"),
    "weights of zero bytes": (lambda f: truncate(f / "model.safetensors", 0), "corrupt or truncated"),
    "weights that are a pickle": (
        lambda f: (f / "model.safetensors").write_bytes(b"\x80\x04K\x01."),
        "corrupt or truncated",
    ),
    # config.json is in GPT-2's format: n_embd is d_model, n_positions the context, n_layer the layers.
    "config wider than the weights": (lambda f: write_config(f, n_embd=64, n_head=4), "does not match config.json"),
    "config longer than the weights": (lambda f: write_config(f, n_positions=128), "does not match config.json"),
    "config with fewer layers": (lambda f: write_config(f, n_layer=1), "does not match config.json"),
    "tokenizer larger than the config": (lambda f: write_config(f, vocab_size=256), "tokenizer has 400 tokens"),
    "tokenizer not JSON": (lambda f: (f / "tokenizer.json").write_text("{"), "tokenizer"),
    "tokenizer file missing": (lambda f: (f / "tokenizer.json").unlink(), "missing tokenizer.json"),
    "config with a NaN dropout": (
        lambda f: (f / "config.json").write_text(
            (f / "config.json").read_text().replace('"resid_pdrop": 0.0', '"resid_pdrop": NaN')
        ),
        "not a valid model config",
    ),
}


@pytest.mark.parametrize("fault", FOLDER_FAULTS)
def test_a_broken_model_folder_serves_the_bundled_model_with_the_reason(
    tmp_path, tiny_model_dir, bundled_is_tiny, fault
):
    break_it, reason = FOLDER_FAULTS[fault]
    folder = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    break_it(folder)
    with pytest.raises(ModelLoadError, match=reason):
        StoryTeller.load(folder, fallback=False)
    teller = StoryTeller.load(folder)
    assert teller.source.kind == "bundled" and reason in teller.notice and str(folder) in teller.notice
    assert teller.tell("It knocked.", max_new_tokens=4, seed=0).story.startswith("It knocked.")
