"""Files of a story chain to download, written when the person asks for one."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from horror.chain import Chain
from horror.errors import UserError

MAX_AGE_SECONDS = 3600  # a download is fetched at once; an hour is plenty
FORMATS = {"txt": Chain.export_text, "md": Chain.export_markdown}


class ChainExports:
    """A folder of exported chains, named by content (the same chain is written once) and
    emptied of files older than MAX_AGE_SECONDS whenever a new one is written."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or Path(tempfile.gettempdir()) / "horror-exports"

    def write(self, chain: Chain, kind: str) -> Path:
        """The chain as a file of `kind` ("txt" or "md"); raises UserError while it is empty."""
        if kind not in FORMATS:
            raise ValueError(f"unknown export format {kind!r}; choose one of {sorted(FORMATS)}")
        if not chain.turns:
            raise UserError("The chain is empty: there is nothing to download yet.")
        content = FORMATS[kind](chain)
        folder = self.folder / hashlib.sha256(content.encode()).hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"story-chain.{kind}"
        path.write_text(content, encoding="utf-8")
        self._forget_old_files()
        return path

    def _forget_old_files(self) -> None:
        cutoff = time.time() - MAX_AGE_SECONDS
        for folder in self.folder.iterdir():
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
