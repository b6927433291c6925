"""Security properties (see SECURITY.md): no pickle in our code, weights only through safetensors,
and the Hub token never printed or logged. The app's escaping and rate limits are tested in
test_app_security.py.
"""

from __future__ import annotations

import ast
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

from horror import cli, hub, storyteller
from horror.model_folder import ModelLoadError, load_model_folder

ROOT = Path(__file__).resolve().parent.parent
OUR_CODE = ["horror", "train", "bench", "app.py"]
SECRET = "hf_secret_test_value"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}


# ----- no pickle ---------------------------------------------------------------------------------


def unsafe_loads(source: str) -> list[str]:
    """Calls and imports in `source` that could unpickle (run code from) a file, one line each."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            found += [
                f"{node.lineno}: import {name}" for name in names if name and name.split(".")[0] in PICKLE_MODULES
            ]
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        weights_only = keywords.get("weights_only")
        if name.endswith("torch.load") or name == "load" and "weights_only" in keywords:
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{node.lineno}: {name} without weights_only=True")
        allow_pickle = keywords.get("allow_pickle")
        if name.split(".")[-1] == "load" and isinstance(allow_pickle, ast.Constant) and allow_pickle.value:
            found.append(f"{node.lineno}: {name} with allow_pickle=True")
        if name in ("eval", "exec") or name.endswith(("yaml.load", "yaml.unsafe_load")):
            found.append(f"{node.lineno}: {name}")
    return found


def our_python_files() -> Iterator[Path]:
    for entry in OUR_CODE:
        path = ROOT / entry
        yield from [path] if path.is_file() else sorted(path.rglob("*.py"))


def test_the_checker_finds_each_kind_of_unsafe_load():
    source = (
        "import pickle\nfrom joblib import load\nimport torch, numpy as np, yaml\n"
        "torch.load('a')\ntorch.load('b', weights_only=False)\nnp.load('c', allow_pickle=True)\n"
        "eval('1')\nyaml.load(s)\ntorch.load('ok', weights_only=True)\nnp.load('ok')\n"
    )
    assert [line.split(":")[0] for line in unsafe_loads(source)] == ["1", "2", "4", "5", "6", "7", "8"]


def test_no_module_of_ours_unpickles_anything():
    # accelerate's load_state (train/train.py, resuming a run) unpickles its own checkpoint files:
    # those are trusted local files, never downloaded (SECURITY.md); it is not a call we can see here.
    problems = {str(path.relative_to(ROOT)): unsafe_loads(path.read_text()) for path in our_python_files()}
    assert len(problems) > 10, "the scan found our code"
    assert {path: found for path, found in problems.items() if found} == {}


def test_weights_that_are_a_pickle_are_refused_without_running_it(tmp_path, tiny_model_dir):
    # Protocol-0 pickle for open(marker, "w"): unpickling it would create the marker file.
    marker = tmp_path / "pickle-ran"
    payload = f"cbuiltins\nopen\n(V{marker}\nVw\ntR.".encode()
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / "model.safetensors").write_bytes(payload)
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_model_folder(folder)
    assert not marker.exists()


def test_model_configs_are_plain_json_and_unknown_fields_are_refused(tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(ModelLoadError, match="unknown model config field"):
        load_model_folder(folder)


# ----- the Hub token is never printed or logged ---------------------------------------------------


class RefusingHub(ThreadingHTTPServer):
    """A stand-in Hub that answers 401 to everything; `echo` makes it quote the caller's
    Authorization header back, the worst a server could do."""

    daemon_threads = True

    def __init__(self, echo: bool):
        super().__init__(("127.0.0.1", 0), RefusingHubHandler)
        self.echo = echo
        self.authorizations: list[str] = []


class RefusingHubHandler(BaseHTTPRequestHandler):
    server: RefusingHub

    def answer(self) -> None:
        authorization = self.headers.get("Authorization", "")
        self.server.authorizations.append(authorization)
        quoted = f" {authorization}" if self.server.echo else ""
        body = json.dumps({"error": f"Invalid credentials{quoted}"}).encode()
        self.send_response(401)
        self.send_header("X-Error-Message", f"Invalid credentials{quoted}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = answer  # noqa: N815 (the names http.server calls)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_hub(request, monkeypatch, tmp_path, tiny_model_dir) -> Iterator[RefusingHub]:
    server = RefusingHub(echo=request.param)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HUB_TIMEOUT_SECONDS", 2.0)
    monkeypatch.setattr(hub, "BUNDLED_MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(storyteller, "BUNDLED_MODEL_DIR", tiny_model_dir)
    for name in ("HORROR_MODEL", "HORROR_MODEL_REVISION", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("refusing_hub", [False], indirect=True)
def test_the_token_is_sent_to_the_hub_but_never_logged_even_at_debug_level(refusing_hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, httpx and huggingface_hub included
    status = cli.main(["info", "--model", "someone/private-model"])
    out, err = capsys.readouterr()
    assert status == 0 and "401" in out  # the notice says why it fell back
    assert f"Bearer {SECRET}" in refusing_hub.authorizations  # the token was really in play
    assert "send_request_headers" in caplog.text  # and the HTTP client's debug log was captured
    assert SECRET not in out + err + caplog.text


@pytest.mark.parametrize("refusing_hub", [True], indirect=True)
def test_a_hub_that_echoes_the_token_does_not_get_it_into_notices_or_errors(
    refusing_hub, capsys, caplog, tiny_model_dir
):
    caplog.set_level(logging.INFO)  # the app logs at INFO, the CLI at WARNING
    teller = storyteller.StoryTeller.load("someone/private-model")
    status = cli.main(["info", "--model", "someone/private-model", "--json"])
    with pytest.raises(Exception) as push_error:
        hub.push_model_folder(tiny_model_dir, "someone/private-model")
    # The trainer prints the first line of a failed push; notices are one line by construction.
    first_line = str(push_error.value).splitlines()[0]
    out, err = capsys.readouterr()
    assert status == 0 and "401" in teller.notice and "401" in first_line
    assert SECRET not in teller.notice + json.dumps(teller.info()) + first_line + out + err + caplog.text


def test_a_push_takes_the_token_from_the_environment_and_never_prints_it(monkeypatch, capsys, caplog, tiny_model_dir):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    seen = {}

    class FakeApi:
        def __init__(self, token=None):
            seen["token argument"] = token  # None: huggingface_hub reads HF_TOKEN itself

        def create_repo(self, repo_id, private, exist_ok):
            pass

        def upload_folder(self, repo_id, folder_path, commit_message):
            return f"https://huggingface.co/{repo_id}/commit/1"

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    print(hub.push_model_folder(tiny_model_dir, "someone/model"))
    out, err = capsys.readouterr()
    assert seen == {"token argument": None} and "someone/model" in out
    assert SECRET not in out + err + caplog.text
