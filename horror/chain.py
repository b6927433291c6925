"""A story chain: the model and a person take turns adding one sentence each.

Pure data and operations (no model, no Gradio): every operation returns a new `Chain`, so the app
can keep the chain as a JSON-able dict in the browser and a failed step changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from horror.errors import UserError
from horror.text import clean_text, escape_markdown, finish_sentence, split_first_sentence

Author = Literal["model", "person"]
AUTHORS: tuple[Author, ...] = ("model", "person")
AUTHOR_LABELS = {"model": "Model", "person": "You"}
MAX_TURNS = 200  # a long evening's game; beyond this the page and the exports get unwieldy
MAX_SENTENCE_CHARS = 500  # one sentence, generously


def window_start(sentences: list[str], max_tokens: int, count_tokens: Callable[[str], int]) -> int:
    """Index of the oldest sentence the model is shown: the newest sentences whose token counts
    fit `max_tokens` (always at least the last one; the model trims that itself). The one rule
    for both what the model reads and what the page dims."""
    used = 0
    start = len(sentences)
    while start > 0:
        cost = count_tokens(sentences[start - 1])
        if start < len(sentences) and used + cost > max_tokens:
            break
        used += cost
        start -= 1
    return start


@dataclass(frozen=True)
class Turn:
    author: Author
    sentence: str
    edited: bool = False  # the person rewrote it (a model sentence then is no longer the model's words)

    @property
    def label(self) -> str:
        """Who wrote it, for the page and the exports: "Model", "You" or "Model, edited by you"."""
        return (
            f"{AUTHOR_LABELS[self.author]}, edited by you"
            if self.edited and self.author == "model"
            else AUTHOR_LABELS[self.author]
        )


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
    def add_person_sentence(self, text: str) -> Chain:
        """Add the person's turn: the first sentence of `text`, cleaned; raises ValueError if empty."""
        sentence, _ = split_first_sentence(_bounded(text))
        if not sentence:
            raise UserError("Write a sentence first: the box is empty.")
        return self._append(Turn("person", finish_sentence(sentence)))

    def add_model_sentence(self, sentence: str) -> Chain:
        """Add the model's turn (cleaned and cut to MAX_SENTENCE_CHARS)."""
        return self._append(Turn("model", _model_sentence(sentence)))

    def retry_last_model_sentence(self, sentence: str) -> Chain:
        """Replace the model's last sentence with a new one."""
        if self.last_author != "model":
            raise UserError("There is no model sentence at the end of the chain to retry.")
        return Chain(self.turns[:-1] + (Turn("model", _model_sentence(sentence)),))

    def undo(self) -> Chain:
        """Remove the last turn, whoever wrote it."""
        if not self.turns:
            raise UserError("Nothing to undo: the chain is empty.")
        return Chain(self.turns[:-1])

    def edit(self, index: int, text: str) -> Chain:
        """Replace sentence `index` (0-based) with the first sentence of `text`, keeping its author."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.turns):
            raise UserError(
                f"There is no sentence number {_display_number(index)}; pick one from 1 to {len(self.turns)}."
                if self.turns
                else "There is nothing to edit yet: the chain is empty."
            )
        sentence, _ = split_first_sentence(_bounded(text))
        if not sentence:
            raise UserError("The new text is empty; use Undo to remove the last sentence instead.")
        turns = list(self.turns)
        turns[index] = Turn(turns[index].author, finish_sentence(sentence), edited=True)
        return Chain(tuple(turns))

    def reset(self) -> Chain:
        """An empty chain."""
        return Chain()

    def _append(self, turn: Turn) -> Chain:
        if self.is_full:
            raise UserError(f"The chain is full ({MAX_TURNS} sentences): export it, then reset to start again.")
        return Chain(self.turns + (turn,))

    # ----- export and serialisation -----------------------------------------------------
    def export_text(self) -> str:
        """The story as one plain-text paragraph."""
        return " ".join(self.sentences) + "\n" if self.turns else ""

    def export_markdown(self, title: str = "A story chain") -> str:
        """The story as Markdown: the paragraph, then who wrote each sentence. User text is escaped."""
        if not self.turns:
            return f"# {escape_markdown(title)}\n\n*(empty)*\n"
        turns = "\n".join(
            f"{number}. **{turn.label}:** {escape_markdown(turn.sentence)}"
            for number, turn in enumerate(self.turns, start=1)
        )
        return f"# {escape_markdown(title)}\n\n{escape_markdown(' '.join(self.sentences))}\n\n## Turns\n\n{turns}\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "turns": [
                {"author": turn.author, "sentence": turn.sentence, **({"edited": True} if turn.edited else {})}
                for turn in self.turns
            ]
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Chain:
        """A chain from `to_dict` output (None: empty). Raises ValueError naming what is wrong."""
        if data is None:
            return cls()
        if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
            raise UserError('a chain must be an object like {"turns": [{"author": "person", "sentence": "..."}]}')
        if len(data["turns"]) > MAX_TURNS:
            raise UserError(f"a chain holds at most {MAX_TURNS} sentences, got {len(data['turns'])}")
        turns = []
        for number, turn in enumerate(data["turns"], start=1):
            if not isinstance(turn, dict) or turn.get("author") not in AUTHORS:
                raise UserError(f"turn {number} needs an author of 'model' or 'person'")
            sentence = clean_text(turn.get("sentence"), f"sentence {number}", MAX_SENTENCE_CHARS)
            if not sentence:
                raise UserError(f"sentence {number} is empty")
            turns.append(Turn(turn["author"], sentence, edited=turn.get("edited") is True))
        return cls(tuple(turns))


def _bounded(text: Any) -> Any:
    if isinstance(text, str) and len(text) > MAX_SENTENCE_CHARS:
        raise UserError(f"That is {len(text):,} characters; one sentence may have at most {MAX_SENTENCE_CHARS}.")
    return text


def _model_sentence(sentence: str) -> str:
    # The model is not refused for rambling: a runaway sentence is cut at a word boundary.
    if not isinstance(sentence, str):
        raise UserError(f"the model's sentence must be text, got {type(sentence).__name__}")
    sentence = clean_text(sentence[: 2 * MAX_SENTENCE_CHARS], "model sentence", limit=2 * MAX_SENTENCE_CHARS)
    if not sentence:
        raise UserError("the model's sentence is empty")
    if len(sentence) > MAX_SENTENCE_CHARS:
        sentence = sentence[: MAX_SENTENCE_CHARS - 1].rsplit(" ", 1)[0] + "\u2026"
    return finish_sentence(sentence)


def _display_number(index: Any) -> str:
    return str(index + 1) if isinstance(index, int) and not isinstance(index, bool) else repr(index)
