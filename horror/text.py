"""Text rules, in one place: cleaning what a person types, where sentences end, and escaping text
shown as HTML or Markdown. Pure functions of strings: no model, no Gradio.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

from horror.errors import UserError

MAX_PROMPT_CHARS = 1000  # a first sentence, or one chain turn

# A sentence ends at a run of . ! ? or … (plus closing quotes/brackets) followed by whitespace.
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)")
_TERMINAL_PUNCTUATION = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*$")
# After these the person's clause is over: what comes next starts after a space.
CLAUSE_ENDS = frozenset(".!?\u2026,;:\"'\u201d\u2019)]}")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "mt"}
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_ZERO_WIDTH_JOINER = "\u200d"
_EMOJI_TAGS = range(0xE0020, 0xE0080)  # the tag letters of subdivision flags (🏴 + tags + cancel tag)


# ----- cleaning -------------------------------------------------------------------------------
def _keeps_format_control(text: str, index: int) -> bool:
    """Emoji need two invisible format characters: the zero-width joiner inside a sequence
    (👩‍👩‍👧) and the tag letters of subdivision flags. Every other one (bidi overrides such as
    U+202E, zero-width spaces, BOMs) only hides or reorders text, so it goes."""
    char = text[index]
    if ord(char) in _EMOJI_TAGS:
        return True
    if char != _ZERO_WIDTH_JOINER or not 0 < index < len(text) - 1:
        return False
    before = text[index - 1] if text[index - 1] != "\ufe0f" or index < 2 else text[index - 2]
    return unicodedata.category(before) in ("So", "Sk") and unicodedata.category(text[index + 1]) in ("So", "Sk")


def one_line(text: str) -> str:
    """`text` as one line of plain text: control characters become spaces, whitespace collapses."""
    return re.sub(r"\s+", " ", _CONTROL_CHARACTERS.sub(" ", text)).strip()


def clean_text(text: Any, what: str = "prompt", limit: int = MAX_PROMPT_CHARS) -> str:
    """Text a person typed, made safe for the model and the page: control characters and lone
    surrogates become spaces, invisible format characters go (but what emoji need stays),
    whitespace is collapsed. Raises UserError for non-text or text over `limit` characters."""
    if text is None:
        return ""
    if not isinstance(text, str):
        raise UserError(f"{what} must be text, got {type(text).__name__}")
    if len(text) > limit:
        raise UserError(f"{what} is {len(text):,} characters long; the limit is {limit:,}")
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> '?'
    kept = "".join(
        char
        for index, char in enumerate(text)
        if unicodedata.category(char) != "Cf" or _keeps_format_control(text, index)
    )
    return one_line(kept)


# ----- sentences ------------------------------------------------------------------------------
def sentence_ends(text: str) -> list[int]:
    """Offsets just past each complete sentence in `text` (a sentence needs whitespace after it)."""
    ends = []
    for match in _SENTENCE_END.finditer(text):
        word_before = re.search(r"(\w+)$", text[: match.start()])
        if match.group().startswith(".") and word_before and word_before.group(1).lower() in _ABBREVIATIONS:
            continue
        ends.append(match.end())
    return ends


def ends_with_sentence(text: str) -> bool:
    """True when `text` ends where a complete sentence ends (trailing whitespace aside)."""
    text = text.rstrip()
    ends = sentence_ends(text + " ")  # sentence_ends needs whitespace after the last sentence
    return bool(ends) and ends[-1] == len(text)


def count_sentences(text: str) -> int:
    """How many sentences `text` holds, counting a final one that has its closing punctuation."""
    return len(sentence_ends(text + " ")) if text else 0


def is_glued(prompt: str, story: str) -> bool:
    """Whether the new text after `prompt` in `story` is glued on badly: a word straight after the
    prompt's closing punctuation ("…out.'amgalic") or a space pushed in before punctuation
    ("…back door , and")."""
    new = story[len(prompt) :] if story.startswith(prompt) else ""
    if not prompt or not new:
        return False
    if prompt[-1] in CLAUSE_ENDS and not new[0].isspace():
        return True
    return new[0].isspace() and new[1:2] in tuple(",.;:!?")


def split_first_sentence(text: str) -> tuple[str, str]:
    """(first sentence, the rest) of cleaned `text`; text with no sentence end is one sentence."""
    text = clean_text(text, "sentence")
    ends = sentence_ends(text + " ")
    if not ends:
        return text, ""
    return text[: ends[0]].strip(), text[ends[0] :].strip()


def finish_sentence(sentence: str) -> str:
    """`sentence` with a full stop added when it has no closing punctuation, so the model's next
    words start a new sentence instead of finishing this one."""
    return sentence if not sentence or _TERMINAL_PUNCTUATION.search(sentence) else sentence + "."


# ----- escaping -------------------------------------------------------------------------------
_LINK_BRACKETS = str.maketrans({"[": "&#91;", "]": "&#93;"})


def escape_html(text: str) -> str:
    """`text` shown literally in HTML; brackets too, so that even a component or toast that also
    reads Markdown never turns "[x](javascript:...)" into a link."""
    return html.escape(text).translate(_LINK_BRACKETS)


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
