"""Where a model comes from: a local folder, a Hub repo (+ revision), the Hub cache, or the
bundled model. The only module that talks to the Hugging Face Hub.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HFValidationError

logger = logging.getLogger(__name__)

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
MODEL_ENV_VAR = "HORROR_MODEL"
REVISION_ENV_VAR = "HORROR_MODEL_REVISION"
# tokenizer_config.json is transformers' (AutoTokenizer); with it the downloaded folder loads there too.
MODEL_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "README.md",
]
HUB_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ModelSource:
    """What was asked for, where the files are, and whether we had to fall back."""

    requested: str  # "bundled", a folder path or a Hub repo id
    path: Path
    kind: str  # "bundled", "folder", "hub" or "hub-cache"
    revision: str | None = None
    notice: str | None = None  # set when we did not get what was asked for

    @property
    def fell_back(self) -> bool:
        return self.notice is not None


def _looks_like_path(source: str) -> bool:
    # A Hub repo id is "name" or "owner/name"; anything else with path syntax is a folder.
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source or Path(source).exists()


def download_from_hub(repo_id: str, revision: str | None = None, local_files_only: bool = False) -> Path:
    """The model files of a Hub repo (downloaded, or from the local Hub cache)."""
    if not local_files_only:
        # snapshot_download quietly serves the local cache when the Hub cannot be reached; asking
        # the Hub first makes that an error, so the caller's fallback can tell the user.
        HfApi().repo_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_SECONDS)
    path = snapshot_download(
        repo_id,
        revision=revision,
        allow_patterns=MODEL_FILES,
        etag_timeout=HUB_TIMEOUT_SECONDS,
        local_files_only=local_files_only,
    )
    return Path(path)


def resolve_model_source(source: str | None = None, revision: str | None = None) -> ModelSource:
    """Find the model folder to load.

    Order: the `source` argument, else $HORROR_MODEL, else the bundled model. A Hub repo that
    cannot be fetched falls back to the Hub cache, then to the bundled model, with a notice.
    """
    source = source or os.environ.get(MODEL_ENV_VAR) or None
    revision = revision or os.environ.get(REVISION_ENV_VAR) or None
    if source is None or source == "bundled":
        return ModelSource("bundled", BUNDLED_MODEL_DIR, "bundled")
    if _looks_like_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"model folder {path} does not exist")
        return ModelSource(source, path, "folder")
    try:
        return ModelSource(source, download_from_hub(source, revision), "hub", revision)
    except HFValidationError as error:
        reason = f"{source!r} is neither a folder nor a valid Hub repo id ({error})"
    except Exception as error:  # network down, repo or revision missing, gated, ...
        reason = f"could not download {source!r}{f'@{revision}' if revision else ''} from the Hub: {_short(error)}"
    try:
        path = download_from_hub(source, revision, local_files_only=True)
        notice = f"{reason}; using the copy in the local Hub cache"
        logger.warning(notice)
        return ModelSource(source, path, "hub-cache", revision, notice)
    except Exception:
        pass
    notice = f"{reason}; serving the bundled model instead"
    logger.warning(notice)
    return ModelSource(source, BUNDLED_MODEL_DIR, "bundled", None, notice)


def push_model_folder(folder: str | Path, repo_id: str, private: bool = False, message: str | None = None) -> str:
    """Upload a model folder to the Hub. The token comes from the environment (HF_TOKEN) or
    the Hub login; it is never printed."""
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=message or "Upload Two-Sentence Horror model"
    )
    return str(info)


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{type(error).__name__}: {text[:200]}"
