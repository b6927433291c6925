"""A stand-in Hugging Face Hub on 127.0.0.1, so that the real `huggingface_hub` and `datasets` code
runs in tests (download, cache, offline reuse, upload) without the network.

A client finds it through `HF_ENDPOINT`, which both libraries read at import time: tests start the
client in a subprocess with `HubStandIn.env(...)` (the endpoint, and every cache in a temporary
folder). Repos ("owner/name" ids) live in memory as {path: bytes}; every commit gets a new sha.

Routes, and the client call that needs each (found by logging what the installed versions ask for:
huggingface_hub 2.4, datasets 5.2):

  GET  /api/{models|datasets}/<repo>[/revision/<rev>]
       repo info: the commit sha and `siblings` (the file list). `load_dataset` and
       `snapshot_download` start here.
  GET  /api/{models|datasets}/<repo>/tree/<rev>[/<folder>]
       a folder listing (files with size and oid, folders). `datasets` resolves data files with it,
       and `snapshot_download` lists what to fetch.
  HEAD|GET  /[datasets/]<repo>/resolve/<rev>/<path>
       a file: `hf_hub_download` reads ETag, X-Repo-Commit and Content-Length from the HEAD, then
       GETs the bytes; no X-Xet-Hash header, so never Xet. A missing file is a 404 with
       X-Error-Code: EntryNotFound, which the clients take as "no such file" (`datasets` asks for a
       README.md, .huggingface.yaml, dataset_infos.json and a loading script that may not exist).
  POST /api/repos/create        `create_repo`; 409 when it exists (exist_ok accepts that)
  POST /api/validate-yaml       `create_commit` checks a README.md's metadata first (accepted as is)
  POST /api/{models|datasets}/<repo>/preupload/<rev>
       the upload mode per file: always "regular", so the bytes come inline in the commit (no LFS, no Xet)
  POST /api/{models|datasets}/<repo>/commit/<rev>
       the commit: NDJSON, a header line, then one `file` line per file (base64) or `deletedFile`.

Writes (create, preupload, commit) need an `Authorization: Bearer ...` header, as on the Hub;
`authorizations` keeps what arrived and `created` each create_repo request. Anything else is a 404
kept in `unknown_requests`, so a client that starts asking for something new fails a test instead
of falling back quietly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

KINDS = {"models": "model", "datasets": "dataset"}  # URL segment -> repo type
WRITES = ("create", "preupload", "commit")


class HubStandIn:
    """The server and its repos. A context manager; `stop()` ends it early (for an offline test)."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo type, repo id) -> files
        self.shas: dict[tuple[str, str], str] = {}
        self.requests: list[str] = []  # "METHOD /path", in order
        self.unknown_requests: list[str] = []
        self.authorizations: set[str] = set()
        self.created: dict[str, dict] = {}  # repo id -> what create_repo sent (type, visibility, ...)
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def env(self, home: Path, offline: bool = False) -> dict[str, str]:
        """Environment for a client process: this endpoint, and every Hub and datasets cache under `home`."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_DATASETS_CACHE": str(home / "datasets"),
            "HF_HUB_OFFLINE": "1" if offline else "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "5",
        }

    def add_repo(self, repo_type: str, repo_id: str, files: dict[str, bytes | str]) -> None:
        """Create (or replace) a "model" or "dataset" repo holding `files`."""
        self.repos[(repo_type, repo_id)] = {
            path: data.encode() if isinstance(data, str) else data for path, data in files.items()
        }
        self._new_commit((repo_type, repo_id))

    def files(self, repo_type: str, repo_id: str) -> dict[str, bytes]:
        return self.repos[(repo_type, repo_id)]

    def _new_commit(self, key: tuple[str, str]) -> None:
        digest = hashlib.sha1(self.shas.get(key, "").encode())
        for path, data in sorted(self.repos[key].items()):
            digest.update(path.encode() + b"\0" + data)
        self.shas[key] = digest.hexdigest()


def _oid(data: bytes) -> str:
    """Git's blob id, which the Hub reports for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _url_prefix(repo_type: str) -> str:
    return "" if repo_type == "model" else f"{repo_type}s/"


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect

    def log_message(self, *args) -> None:  # quiet: `hub.requests` is the log
        pass

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        method, path = self.command, unquote(urlsplit(self.path).path)
        self.hub.requests.append(f"{method} {path}")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = path.strip("/").split("/")
        if path == "/api/validate-yaml" and method == "POST":
            return self._json({"errors": [], "warnings": []})
        if path == "/api/repos/create" and method == "POST":
            if self._authorized():
                self._create_repo(json.loads(body))
            return None
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in KINDS:
            return self._api(KINDS[parts[1]], parts[2:], body)
        repo_type = "dataset" if parts[0] == "datasets" else "model"
        parts = parts[1:] if repo_type == "dataset" else parts
        if method in ("HEAD", "GET") and len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve((repo_type, "/".join(parts[:2])), parts[3], "/".join(parts[4:]))
        self._unknown()

    def _api(self, repo_type: str, parts: list[str], body: bytes) -> None:
        key = (repo_type, "/".join(parts[:2]))
        action, rest = (parts[2], parts[3:]) if len(parts) > 2 else ("revision", ["main"])
        if key not in self.hub.repos:
            return self._error(404, "RepoNotFound", f"repository {key[1]} not found")
        if self.command == "GET" and action == "revision":
            return self._json(self._repo_info(key))
        if self.command == "GET" and action == "tree" and rest:
            return self._json(self._tree(key, "/".join(rest[1:])))
        if self.command == "POST" and action in WRITES and not self._authorized():
            return None
        if self.command == "POST" and action == "preupload":
            return self._json(
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in json.loads(body)["files"]
                    ]
                }
            )
        if self.command == "POST" and action == "commit":
            return self._commit(key, body)
        self._unknown()

    # ----- reading ----------------------------------------------------------------
    def _repo_info(self, key: tuple[str, str]) -> dict:
        return {
            "id": key[1],
            "sha": self.hub.shas[key],
            "private": False,
            "disabled": False,
            "gated": False,
            "siblings": [{"rfilename": path} for path in sorted(self.hub.repos[key])],
            "tags": [],
            "cardData": {},
            "lastModified": "2025-01-01T00:00:00.000Z",
        }

    def _entries(self, key: tuple[str, str]) -> list[dict]:
        """Every file and folder of the repo, as tree entries."""
        entries, folders = [], set()
        for path, data in sorted(self.hub.repos[key].items()):
            entries.append({"type": "file", "path": path, "size": len(data), "oid": _oid(data)})
            parent = path.rpartition("/")[0]
            while parent:
                folders.add(parent)
                parent = parent.rpartition("/")[0]
        return entries + [
            {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0} for folder in sorted(folders)
        ]

    def _tree(self, key: tuple[str, str], folder: str) -> list[dict]:
        recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["false"])[0].lower() in ("true", "1")
        prefix = f"{folder}/" if folder else ""
        inside = [entry for entry in self._entries(key) if entry["path"].startswith(prefix)]
        return inside if recursive else [entry for entry in inside if "/" not in entry["path"][len(prefix) :]]

    def _resolve(self, key: tuple[str, str], revision: str, path: str) -> None:
        if key not in self.hub.repos:
            return self._error(404, "RepoNotFound", f"repository {key[1]} not found")
        if revision not in ("main", self.hub.shas[key]):
            return self._error(404, "RevisionNotFound", f"revision {revision} not found")
        data = self.hub.repos[key].get(path)
        commit = {"X-Repo-Commit": self.hub.shas[key]}
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} not found in {key[1]}", commit)
        self._send(200, data, "application/octet-stream", {**commit, "ETag": f'"{_oid(data)}"'})

    # ----- writing ----------------------------------------------------------------
    def _authorized(self) -> bool:
        token = self.headers.get("Authorization", "")
        if not token.startswith("Bearer "):
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return False
        self.hub.authorizations.add(token)
        return True

    def _create_repo(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = "/".join(filter(None, (payload.get("organization"), payload["name"])))
        url = f"{self.hub.url}/{_url_prefix(repo_type)}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            return self._json({"error": "You already created this repo", "url": url}, 409)
        self.hub.add_repo(repo_type, repo_id, {})
        self.hub.created[repo_id] = payload
        self._json({"url": url, "name": repo_id})

    def _commit(self, key: tuple[str, str], body: bytes) -> None:
        files = dict(self.hub.repos[key])
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            elif item["key"] != "header":  # lfsFile and the like: preupload never asks for them
                return self._error(400, "BadRequest", f"the stand-in Hub takes inline files only, got {item['key']}")
        self.hub.repos[key] = files
        self.hub._new_commit(key)
        sha = self.hub.shas[key]
        self._json({"commitUrl": f"{self.hub.url}/{_url_prefix(key[0])}{key[1]}/commit/{sha}", "commitOid": sha})

    # ----- answers ----------------------------------------------------------------
    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, payload, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._json({"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def _unknown(self) -> None:
        self.hub.unknown_requests.append(f"{self.command} {self.path}")
        self._error(404, "NotFound", f"the stand-in Hub does not serve {self.command} {self.path}")
