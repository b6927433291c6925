"""A story chain: the model and a person take turns adding one sentence each.

Pure data and operations (no model, no Gradio): every operation returns a new `Chain`, so the app
can keep the chain as a JSON-able dict in per-session state and a failed step changes nothing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from horror.generation import sentence_ends
from horror.storyteller import clean_text

Author = Literal["model", "person"]
AUTHORS: tuple[Author, ...] = ("model", "person")
AUTHOR_LABELS = {"model": "Model", "person": "You"}
MAX_TURNS = 200  # a long evening's game; beyond this the page and the exports get unwieldy
MAX_SENTENCE_CHARS = 500  # one sentence, generously
_TERMINAL_PUNCTUATION = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")


def split_first_sentence(text: str) -> tuple[str, str]:
    """(first sentence, the rest) of cleaned `text`; text with no sentence end is one sentence."""
    text = clean_text(text, "sentence")
    ends = sentence_ends(text + " ")  # sentence_ends needs whitespace after the last sentence
    if not ends:
        return text, ""
    return text[: ends[0]].strip(), text[ends[0]:].strip()


def finish_sentence(sentence: str) -> str:
    """`sentence` with a full stop added when it has no closing punctuation, so the model's next
    words start a new sentence instead of finishing this one."""
    return sentence if not sentence or _TERMINAL_PUNCTUATION.search(sentence) else sentence + "."


def escape_markdown(text: str, inline: bool = False) -> str:
    """`text` that Markdown shows literally: inline syntax and HTML escaped, and line-start block
    markers too unless `inline` (text placed mid-line, such as a table cell, cannot start a block)."""
    # HTML's own characters become entities: a renderer that ignores backslashes still shows them.
    text = html.escape(text, quote=False)
    text = re.sub(r"([\\`*_\[\]|~$])", r"\\\1", text)
    if inline:
        return text
    text = re.sub(r"(?m)^(\s*)([#>+=-])", r"\1\\\2", text)  # headings, quotes, lists, rules
    return re.sub(r"(?m)^(\s*\d+)([.)])", r"\1\\\2", text)  # "1." would start a numbered list


@dataclass(frozen=True)
class Turn:
    author: Author
    sentence: str


@dataclass(frozen=True)
class Chain:
    """The sentences so far, oldest first, each with who wrote it."""

    turns: tuple[Turn, ...] = field(default_factory=tuple)

    # ----- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.turns)

    @property
    def sentences(self) -> list[str]:
        return [turn.sentence for turn in self.turns]

    @property
    def last_author(self) -> Author | None:
        return self.turns[-1].author if self.turns else None

    @property
    def is_full(self) -> bool:
        return len(self.turns) >= MAX_TURNS

    # ----- operations (each returns a new Chain) ------------------------------------------
    def add_person_sentence(self, text: str) -> "Chain":
        """Add the person's turn: the first sentence of `text`, cleaned; raises ValueError if empty."""
        sentence, _ = split_first_sentence(_bounded(text))
        if not sentence:
            raise ValueError("Write a sentence first: the box is empty.")
        return self._append(Turn("person", finish_sentence(sentence)))

    def add_model_sentence(self, sentence: str) -> "Chain":
        """Add the model's turn (cleaned and cut to MAX_SENTENCE_CHARS)."""
        return self._append(Turn("model", _model_sentence(sentence)))

    def retry_last_model_sentence(self, sentence: str) -> "Chain":
        """Replace the model's last sentence with a new one."""
        if self.last_author != "model":
            raise ValueError("There is no model sentence at the end of the chain to retry.")
        return Chain(self.turns[:-1] + (Turn("model", _model_sentence(sentence)),))

    def undo(self) -> "Chain":
        """Remove the last turn, whoever wrote it."""
        if not self.turns:
            raise ValueError("Nothing to undo: the chain is empty.")
        return Chain(self.turns[:-1])

    def edit(self, index: int, text: str) -> "Chain":
        """Replace sentence `index` (0-based) with the first sentence of `text`, keeping its author."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.turns):
            raise ValueError(f"There is no sentence number {_display_number(index)}; "
                             f"pick one from 1 to {len(self.turns)}." if self.turns
                             else "There is nothing to edit yet: the chain is empty.")
        sentence, _ = split_first_sentence(_bounded(text))
        if not sentence:
            raise ValueError("The new text is empty; use Undo to remove the last sentence instead.")
        turns = list(self.turns)
        turns[index] = Turn(turns[index].author, finish_sentence(sentence))
        return Chain(tuple(turns))

    def reset(self) -> "Chain":
        """An empty chain."""
        return Chain()

    def _append(self, turn: Turn) -> "Chain":
        if self.is_full:
            raise ValueError(f"The chain is full ({MAX_TURNS} sentences): export it, then reset to start again.")
        return Chain(self.turns + (turn,))

    # ----- what the model sees ----------------------------------------------------------
    def model_view_start(self, max_tokens: int, count_tokens: Callable[[str], int]) -> int:
        """Index of the oldest sentence in the model's view: the newest sentences whose token
        counts fit `max_tokens` (always at least the last one; the model trims that itself)."""
        used = 0
        start = len(self.turns)
        while start > 0:
            cost = count_tokens(self.turns[start - 1].sentence)
            if start < len(self.turns) and used + cost > max_tokens:
                break
            used += cost
            start -= 1
        return start

    def model_view(self, max_tokens: int, count_tokens: Callable[[str], int]) -> list[str]:
        """The sentences the model is shown: older ones drop out of its view, never out of the chain."""
        return self.sentences[self.model_view_start(max_tokens, count_tokens):]

    # ----- export and serialisation -----------------------------------------------------
    def export_text(self) -> str:
        """The story as one plain-text paragraph."""
        return " ".join(self.sentences) + "\n" if self.turns else ""

    def export_markdown(self, title: str = "A story chain") -> str:
        """The story as Markdown: the paragraph, then who wrote each sentence. User text is escaped."""
        if not self.turns:
            return f"# {escape_markdown(title)}\n\n*(empty)*\n"
        turns = "\n".join(f"{number}. **{AUTHOR_LABELS[turn.author]}:** {escape_markdown(turn.sentence)}"
                          for number, turn in enumerate(self.turns, start=1))
        return f"# {escape_markdown(title)}\n\n{escape_markdown(' '.join(self.sentences))}\n\n## Turns\n\n{turns}\n"

    def to_dict(self) -> dict[str, Any]:
        return {"turns": [{"author": turn.author, "sentence": turn.sentence} for turn in self.turns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Chain":
        """A chain from `to_dict` output (None: empty). Raises ValueError naming what is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
            raise ValueError('a chain must be an object like {"turns": [{"author": "person", "sentence": "..."}]}')
        if len(data["turns"]) > MAX_TURNS:
            raise ValueError(f"a chain holds at most {MAX_TURNS} sentences, got {len(data['turns'])}")
        turns = []
        for number, turn in enumerate(data["turns"], start=1):
            if not isinstance(turn, dict) or turn.get("author") not in AUTHORS:
                raise ValueError(f"turn {number} needs an author of 'model' or 'person'")
            sentence = clean_text(turn.get("sentence"), f"sentence {number}", MAX_SENTENCE_CHARS)
            if not sentence:
                raise ValueError(f"sentence {number} is empty")
            turns.append(Turn(turn["author"], sentence))
        return cls(tuple(turns))


def _bounded(text: Any) -> Any:
    if isinstance(text, str) and len(text) > MAX_SENTENCE_CHARS:
        raise ValueError(f"That is {len(text):,} characters; one sentence may have at most {MAX_SENTENCE_CHARS}.")
    return text


def _model_sentence(sentence: str) -> str:
    # The model is not refused for rambling: a runaway sentence is cut at a word boundary.
    if not isinstance(sentence, str):
        raise ValueError(f"the model's sentence must be text, got {type(sentence).__name__}")
    sentence = clean_text(sentence[: 2 * MAX_SENTENCE_CHARS], "model sentence", limit=2 * MAX_SENTENCE_CHARS)
    if not sentence:
        raise ValueError("the model's sentence is empty")
    if len(sentence) > MAX_SENTENCE_CHARS:
        sentence = sentence[: MAX_SENTENCE_CHARS - 1].rsplit(" ", 1)[0] + "\u2026"
    return finish_sentence(sentence)


def _display_number(index: Any) -> str:
    return str(index + 1) if isinstance(index, int) and not isinstance(index, bool) else repr(index)
