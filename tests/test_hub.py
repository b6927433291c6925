"""Where the model comes from: folder, Hub, Hub cache or bundled, and the notice when we fall back.

No test reaches the network: every test points the Hub endpoint at a closed local port and
the Hub cache at an empty temporary folder (huggingface_hub reads both at import time, so the
module constants are patched as well as the environment).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest

from horror import hub, storyteller
from horror.hub import ModelSource, push_model_folder, resolve_model_source
from horror.model_folder import ModelLoadError
from horror.storyteller import StoryTeller
from hub_standin import HubStandIn

REPO = "someone/two-sentence-horror"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket closes


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path, tiny_model_dir) -> Path:
    """An unreachable Hub, an empty Hub cache, and the tiny model standing in for the bundled one."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setattr(hub, "HUB_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(hub, "BUNDLED_MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(storyteller, "BUNDLED_MODEL_DIR", tiny_model_dir)
    for name in ("HORROR_MODEL", "HORROR_MODEL_REVISION", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return cache


def put_in_hub_cache(cache: Path, model_dir: Path, repo: str = REPO, ref: str = "main") -> Path:
    """The layout huggingface_hub writes: refs/<ref> holds the commit, snapshots/<commit>/ the files."""
    repo_folder = cache / f"models--{repo.replace('/', '--')}"
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / ref).write_text(COMMIT)
    snapshot = repo_folder / "snapshots" / COMMIT
    shutil.copytree(model_dir, snapshot, dirs_exist_ok=True)
    return snapshot


def go_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_no_source_means_the_bundled_model(tiny_model_dir):
    source = resolve_model_source()
    assert source == ModelSource("bundled", tiny_model_dir, "bundled")
    assert not source.fell_back


def test_a_folder_is_used_as_it_is(tiny_model_dir):
    source = resolve_model_source(str(tiny_model_dir))
    assert (source.kind, source.path, source.notice) == ("folder", tiny_model_dir, None)


@pytest.mark.parametrize("path", ["./no-such-model", "/no/such/model", "~/no-such-model", "a/b/c"])
def test_a_missing_folder_is_an_error_not_a_hub_lookup(path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_source(path)


def test_a_malformed_repo_id_falls_back_to_bundled_with_a_notice(tiny_model_dir):
    source = resolve_model_source("not a repo id!!")
    assert (source.kind, source.path) == ("bundled", tiny_model_dir)
    assert "neither a folder nor a valid Hub repo id" in source.notice


def test_an_unreachable_hub_with_nothing_cached_falls_back_to_bundled(tiny_model_dir):
    source = resolve_model_source(REPO)
    assert (source.kind, source.path, source.requested) == ("bundled", tiny_model_dir, REPO)
    assert f"could not download {REPO!r}" in source.notice and "bundled" in source.notice


def test_an_unreachable_hub_serves_the_cached_copy_with_a_notice(offline_hub, tiny_model_dir):
    snapshot = put_in_hub_cache(offline_hub, tiny_model_dir)
    source = resolve_model_source(REPO)
    assert (source.kind, source.path) == ("hub-cache", snapshot)
    assert "local Hub cache" in source.notice
    teller = StoryTeller.load(REPO)
    assert teller.source.kind == "hub-cache" and teller.notice == source.notice
    assert teller.tell("It knocked.", seed=1).story.startswith("It knocked.")


def test_a_cached_revision_is_found_by_its_name(offline_hub, tiny_model_dir, monkeypatch):
    snapshot = put_in_hub_cache(offline_hub, tiny_model_dir, ref="v1")
    monkeypatch.setenv("HORROR_MODEL", REPO)
    monkeypatch.setenv("HORROR_MODEL_REVISION", "v1")
    source = resolve_model_source()
    assert (source.kind, source.path, source.revision) == ("hub-cache", snapshot, "v1")
    assert resolve_model_source(REPO, "v2").kind == "bundled"  # a revision nobody cached


def test_offline_mode_serves_the_hub_cache_with_a_notice(offline_hub, tiny_model_dir, monkeypatch):
    go_offline(monkeypatch)
    snapshot = put_in_hub_cache(offline_hub, tiny_model_dir)
    source = resolve_model_source(REPO)
    assert (source.kind, source.path) == ("hub-cache", snapshot)
    assert "OfflineModeIsEnabled" in source.notice


def test_offline_mode_with_nothing_cached_falls_back_to_bundled(monkeypatch, tiny_model_dir):
    go_offline(monkeypatch)
    assert resolve_model_source(REPO).path == tiny_model_dir


def test_without_fallback_an_unreachable_hub_is_a_model_load_error():
    with pytest.raises(ModelLoadError, match="could not download"):
        StoryTeller.load(REPO, fallback=False)
    with pytest.raises(ModelLoadError, match="valid Hub repo id"):
        StoryTeller.load("not a repo id!!", fallback=False)


def test_with_fallback_the_teller_serves_bundled_and_says_why(tiny_model_dir):
    teller = StoryTeller.load(REPO)
    assert teller.source.kind == "bundled" and teller.source.path == tiny_model_dir
    assert teller.notice and REPO in teller.notice
    assert teller.info()["notice"] == teller.notice


def test_a_corrupt_cached_copy_falls_back_to_bundled(offline_hub, tiny_model_dir):
    snapshot = put_in_hub_cache(offline_hub, tiny_model_dir)
    (snapshot / "model.safetensors").write_bytes(b"\0" * 50)
    teller = StoryTeller.load(REPO)
    assert teller.source.kind == "bundled" and "corrupt or truncated" in teller.notice
    with pytest.raises(ModelLoadError):
        StoryTeller.load(REPO, fallback=False)


def test_push_uploads_the_folder_to_the_hub(monkeypatch, tiny_model_dir, tmp_path):
    """Through the real huggingface_hub upload path, to the stand-in Hub (tests/hub_standin.py)."""
    with HubStandIn() as standin:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", standin.url)  # HfApi's default endpoint
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        commit = push_model_folder(tiny_model_dir, REPO, private=True)
    arrived = standin.files("model", REPO)
    assert arrived == {path.name: path.read_bytes() for path in tiny_model_dir.iterdir()}
    assert commit.endswith(f"/{REPO}/commit/{standin.shas[('model', REPO)]}")
    assert standin.created[REPO]["visibility"] == "private"
    assert standin.authorizations == {"Bearer hf_test_token"}
    for name, content in arrived.items():
        (tmp_path / name).write_bytes(content)
    assert StoryTeller.load(tmp_path, fallback=False).tell("It knocked.", seed=1).story.startswith("It knocked.")
