"""Story-quality metrics: pure functions over texts, plus one driver that generates and scores.

Words are lower-cased runs of letters/digits (apostrophes inside a word kept: "don't"), so
punctuation and case never make two n-grams differ.

- well-formed: the continuation is exactly one complete sentence by `text.sentence_ends`
  (ending in . ! ? or …, optionally followed by closing quotes/brackets), has at least 4 words,
  and has no loop: no word 3-gram occurs twice in it.
- novelty: share of continuations that share no word 8-gram with any training story.
- distinct-n: unique word n-grams / all word n-grams, pooled over the continuations.
- clean chain sentence: starts like a sentence (a capital, digit or opening quote), ends like one,
  and has no run-on artefacts such as "now., they" or "dinner.." (a model forced past <EOS>).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from horror.config import MAX_BATCH_SIZE
from horror.text import count_sentences, ends_with_sentence, sentence_ends

MIN_WORDS = 4
LOOP_N = 3  # a repeated 3-gram is a loop; 2-grams ("in the") repeat in good prose too
NOVELTY_N = 8  # 8 words in a row shared with a training story is copying, not coincidence

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation stripped (apostrophes inside words kept)."""
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """All n-grams of `tokens`, in order, repeats included."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def ngram_set(text: str, n: int) -> set[tuple[str, ...]]:
    """The distinct word n-grams of `text` (lower-cased, punctuation stripped)."""
    return set(ngrams(words(text), n))


def has_ngram_loop(text: str, n: int = LOOP_N) -> bool:
    """True when some word n-gram occurs more than once (the model is going round in circles)."""
    grams = ngrams(words(text), n)
    return len(grams) != len(set(grams))


def is_well_formed(continuation: str) -> bool:
    """Exactly one complete sentence that ends the text, at least 4 words, no repeated 3-gram."""
    text = continuation.strip()
    if len(words(text)) < MIN_WORDS or has_ngram_loop(text):
        return False
    return count_sentences(text) == 1 and ends_with_sentence(text)


def novelty(continuations: list[str], train_texts: Iterable[str], n: int = NOVELTY_N) -> float:
    """Share of continuations with no word n-gram in common with any training text (0 for none)."""
    if not continuations:
        return 0.0
    seen: set[tuple[str, ...]] = set()  # built once: ~6K stories give ~150K 8-grams
    for text in train_texts:
        seen.update(ngrams(words(text), n))
    novel = sum(1 for text in continuations if seen.isdisjoint(ngrams(words(text), n)))
    return novel / len(continuations)


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams over all word n-grams in `texts` (0 when there are none)."""
    grams = [gram for text in texts for gram in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (all of it when it has none)."""
    ends = sentence_ends(text.strip() + " ")
    return text.strip()[: ends[0]] if ends else text.strip()


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a & b| / |a | b|, 0 for two empty sets."""
    return len(a & b) / len(a | b) if a or b else 0.0


def prompt_leaks(
    prompts: list[str], train_texts: list[str], n: int = NOVELTY_N, max_similarity: float = 0.5
) -> list[dict[str, Any]]:
    """Evaluation prompts that leak training text: a word n-gram shared with any training story,
    or a word-set Jaccard similarity above `max_similarity` with a training story's first sentence.

    An empty list means the prompts are clean; each leak names the prompt, the story and why."""
    seen: dict[tuple[str, ...], str] = {}
    openings = []
    for text in train_texts:
        for gram in ngrams(words(text), n):
            seen.setdefault(gram, text)
        openings.append((set(words(first_sentence(text))), text))
    leaks = []
    for prompt in prompts:
        shared = next((gram for gram in ngrams(words(prompt), n) if gram in seen), None)
        if shared is not None:
            leaks.append({"prompt": prompt, "story": seen[shared], "reason": f"shares {' '.join(shared)!r}"})
            continue
        prompt_words = set(words(prompt))
        similarity, story = max(
            ((jaccard(prompt_words, opening), text) for opening, text in openings), default=(0.0, "")
        )
        if similarity > max_similarity:
            leaks.append({"prompt": prompt, "story": story, "reason": f"first-sentence similarity {similarity:.2f}"})
    return leaks


def drop_comments(lines: list[str]) -> list[str]:
    """Non-empty stripped lines, '#' comment lines skipped (the prompt file format)."""
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def load_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 file, '#' comment lines skipped."""
    return drop_comments(Path(path).read_text(encoding="utf-8").splitlines())


# ".." that is not part of an ellipsis, or a sentence end glued to a comma/semicolon (".," ",.").
_CHAIN_ARTEFACT = re.compile(r"(?<!\.)\.\.(?!\.)|[.!?\u2026][,;]|[,;][.!?]")
_SENTENCE_START = re.compile(r"^[\"'\u201c\u2018(\[]*[A-Z0-9]")


def is_clean_chain_sentence(sentence: str) -> bool:
    """One sentence that starts and ends like a sentence and has no run-on artefacts."""
    text = sentence.strip()
    return (
        bool(_SENTENCE_START.match(text))
        and len(sentence_ends(text + " ")) == 1
        and ends_with_sentence(text)
        and not _CHAIN_ARTEFACT.search(text)
    )


def evaluate_chain(teller: Any, prompts: list[str], turns: int = 6, seed: int = 0) -> dict[str, Any]:
    """Grow a story chain from each prompt, the model writing `turns` sentences in a row (the
    hardest case: its own sentences fill the window), and count the clean ones."""
    if isinstance(turns, bool) or not isinstance(turns, int) or not 1 <= turns <= 64:
        raise ValueError(f"turns must be a whole number between 1 and 64, got {turns!r}")
    sentences_written, chains = [], []
    for index, prompt in enumerate(prompts):
        chain = [prompt]
        for turn in range(turns):
            story = teller.continue_chain(chain, seed=prompt_seed(seed, index) * 64 + turn)
            chain.append(story.continuation)
            sentences_written.append(story.continuation)
        chains.append(chain)
    clean = [is_clean_chain_sentence(s) for s in sentences_written]
    return {
        "chains": len(chains),
        "sentences": len(sentences_written),
        "clean": sum(clean) / len(clean),
        "unclean_examples": [s for s, ok in zip(sentences_written, clean) if not ok][:10],
        "examples": [" ".join(chain) for chain in chains[:5]],
    }


def prompt_seed(seed: int, index: int) -> int:
    """The sampling seed for prompt `index`: fixed by (seed, index), different for every prompt."""
    return seed * 1_000_003 + index


def evaluate_model(
    teller: Any,
    prompts: list[str],
    samples: int = 3,
    train_texts: list[str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Generate `samples` stories per prompt (one batch each, model defaults) and summarise them.
    Every story is one sample (a model's `best_of` is not applied): these figures describe what
    the model writes, not which of its stories best of N keeps.

    `teller` is a StoryTeller (anything with `tell_many`); novelty is None without `train_texts`."""
    if not prompts:
        raise ValueError("no prompts to evaluate; give a file with one first sentence per line")
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_BATCH_SIZE:
        raise ValueError(f"samples must be a whole number between 1 and {MAX_BATCH_SIZE}, got {samples!r}")
    stories = []
    for index, prompt in enumerate(prompts):
        stories.extend(teller.tell_many(prompt, samples, seed=prompt_seed(seed, index)))
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
        # The first story of each of the first 10 prompts: enough to eyeball, small enough to print.
        "examples": [
            {"prompt": story.prompt, "continuation": story.continuation, "well_formed": ok}
            for story, ok in list(zip(stories, formed))[::samples][:10]
        ],
    }
