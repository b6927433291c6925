"""A story as a link: the query string that tells it again (first sentence, seed, every setting,
best-of N and the model revision), and the settings read back from such a link.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from horror.config import MAX_BEST_OF, GenerationConfig
from horror.errors import UserError
from horror.storyteller import Story

# Query name -> setting: short names keep the link short enough to paste anywhere.
SETTING_NAMES = {
    "t": "temperature",
    "k": "top_k",
    "p": "top_p",
    "mp": "min_p",
    "rp": "repetition_penalty",
    "len": "max_new_tokens",
}
MAX_QUERY_VALUE_CHARS = 40  # any number fits; longer is not a number we wrote


@dataclass(frozen=True)
class SharedStory:
    """What a shared link asks for, checked: the story tab's inputs."""

    prompt: str
    best_of: int
    settings: GenerationConfig
    revision: str | None


def share_query(story: Story, best_of: int, overrides: dict[str, Any], info: dict[str, Any]) -> str:
    """The query string of a link that tells `story` again: its prompt and seed, the settings it
    was told with, best-of N, and the model's revision (where it came from the Hub)."""
    settings = {**info.get("generation_config", {}), **{k: v for k, v in overrides.items() if v is not None}}
    query: dict[str, Any] = {"story": story.prompt, "seed": story.seed}
    query.update({short: settings[name] for short, name in SETTING_NAMES.items() if name in settings})
    if best_of > 1:
        query["n"] = best_of
    if info.get("revision"):
        query["rev"] = info["revision"]
    return urlencode(query)


def shared_story(params: dict[str, str], defaults: GenerationConfig) -> SharedStory | None:
    """The story a link's query asks for, or None when the page was opened without one.

    Raises UserError (from the settings' own checks) naming a value that is out of range."""
    if "seed" not in params:
        return None
    changes: dict[str, Any] = {}
    for short, name in SETTING_NAMES.items():
        if short in params:
            changes[name] = _number(params[short], name)
    settings = defaults.replace(**changes, seed=_number(params["seed"], "seed"))
    best_of = int(_number(params.get("n", "1"), "n"))
    if not 1 <= best_of <= MAX_BEST_OF:
        best_of = 1
    prompt = params.get("story", "")  # checked, like any prompt, when the story is told
    return SharedStory(prompt, best_of, settings, params.get("rev"))


def _number(text: str, name: str) -> float | int:
    text = str(text).strip()[:MAX_QUERY_VALUE_CHARS]
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"The shared link's {name} ({text!r}) is not a number.") from None
