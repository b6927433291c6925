"""Two-Sentence Horror: a small GPT that writes two-sentence horror stories.

`from horror import StoryTeller` works, but nothing heavy loads until it is asked for: the pure
modules (text, chain, errors, views' helpers) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GenerationConfig": "horror.config",
    "ModelConfig": "horror.config",
    "Story": "horror.storyteller",
    "StoryTeller": "horror.storyteller",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'horror' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
