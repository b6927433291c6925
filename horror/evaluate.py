"""Story-quality metrics: pure functions over texts, plus one driver that generates and scores.

- well-formed: the continuation is exactly one complete sentence (ending in . ! ? or … and
  optionally closing quotes/brackets), at least 4 words, with no 3-word loop (a word 3-gram
  that occurs twice).
- novelty: share of continuations sharing no word 8-gram with any training story.
- distinct-n: unique word n-grams / all word n-grams over the continuations.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from horror.generation import sentence_ends

_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation stripped (apostrophes inside words kept)."""
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def has_ngram_loop(text: str, n: int = 3) -> bool:
    """True when some word n-gram occurs more than once (the model is going round in circles)."""
    grams = ngrams(words(text), n)
    return len(grams) != len(set(grams))


def is_well_formed(continuation: str) -> bool:
    """Exactly one complete sentence, at least 4 words, no repeated 3-gram."""
    text = continuation.strip()
    if len(words(text)) < 4 or has_ngram_loop(text):
        return False
    ends = sentence_ends(text + " ")
    return len(ends) == 1 and ends[0] == len(text)


def novelty(continuations: list[str], train_texts: Iterable[str], n: int = 8) -> float:
    """Share of continuations with no word n-gram in common with any training text."""
    if not continuations:
        return 0.0
    seen = {gram for text in train_texts for gram in ngrams(words(text), n)}
    novel = sum(1 for text in continuations if not any(gram in seen for gram in ngrams(words(text), n)))
    return novel / len(continuations)


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams over all word n-grams in `texts` (0 when there are none)."""
    grams = [gram for text in texts for gram in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def load_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a file, '#' comment lines skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def evaluate_model(
    teller: Any,
    prompts: list[str],
    samples: int = 3,
    train_texts: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Generate `samples` stories per prompt with the model's default settings and summarise."""
    if not prompts:
        raise ValueError("no prompts to evaluate")
    if not 1 <= samples <= 16:
        raise ValueError(f"samples must be between 1 and 16, got {samples}")
    stories = []
    for index, prompt in enumerate(prompts):
        stories.extend(teller.tell_many(prompt, samples, seed=seed * 100_003 + index))
    continuations = [story.continuation for story in stories]
    formed = [is_well_formed(text) for text in continuations]
    return {
        "prompts": len(prompts),
        "samples": samples,
        "stories": len(stories),
        "well_formed": sum(formed) / len(formed),
        "novelty": novelty(continuations, train_texts) if train_texts else None,
        "distinct_1": distinct_n(continuations, 1),
        "distinct_2": distinct_n(continuations, 2),
        "mean_confidence": statistics.fmean(story.confidence for story in stories),
        "seconds_per_story": statistics.median(story.seconds for story in stories),
        "mean_new_tokens": statistics.fmean(story.new_tokens for story in stories),
        "examples": [
            {"prompt": s.prompt, "continuation": s.continuation, "well_formed": ok}
            for s, ok in list(zip(stories, formed))[:: max(1, samples)][:10]
        ],
    }
