"""Property-based tests (hypothesis): any sampling settings either raise ValueError or generate a
clean story on the tiny model; any sequence of chain operations keeps the chain's invariants.

Examples are bounded and derandomized, so the suite is fast and the same on every run.
"""

from __future__ import annotations

import math
import unicodedata

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from horror.config import GenerationConfig
from horror.generation import FINISH_SENTENCE_TOKENS

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
)
TINY = st.floats(0, 1e-30)  # float32 turns logits / 1e-40 into inf: these must be refused or harmless
VALID = {
    "temperature": st.floats(0, 3) | TINY,
    "top_k": st.integers(0, 600),
    "top_p": st.floats(0, 1) | TINY,
    "min_p": st.floats(0, 1) | TINY,
    "repetition_penalty": st.floats(0, 3) | TINY,
    "no_repeat_ngram_size": st.integers(0, 5),
    "max_new_tokens": st.integers(1, 12),  # short, so each example generates quickly
    "seed": st.integers(0, 2**63 - 1),
    "stop_after_sentences": st.integers(1, 3),
    "allow_eos": st.booleans(),
}


@st.composite
def chosen_settings(draw: st.DrawFn) -> dict:
    """Some settings from their plausible ranges (edges included), and at most one of anything at all."""
    overrides = draw(st.fixed_dictionaries({}, optional=VALID))
    junk_name = draw(st.none() | st.sampled_from(sorted(VALID)))
    if junk_name == "max_new_tokens":  # junk, but never a valid length that would generate for long
        overrides[junk_name] = draw(st.sampled_from([0, -1, 513, 10**9, 2.5, "8", math.nan, None]))
    elif junk_name is not None:
        overrides[junk_name] = draw(JUNK)
    return overrides


def is_plain_text(text: str) -> bool:
    return not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


@FAST
@given(overrides=chosen_settings(), method=st.sampled_from(["tell", "stream", "best_of"]))
def test_any_settings_raise_value_error_or_tell_a_clean_story(tiny_teller, overrides, method):
    try:
        config = GenerationConfig(**{"max_new_tokens": 8, **overrides})
    except ValueError:
        event("refused")
        return  # refused up front, with a message naming the setting (test_config.py)
    event("told")
    if method == "tell":
        story = tiny_teller.tell("It knocked.", config)
    elif method == "stream":
        *_, story = tiny_teller.stream("It knocked.", config)
    else:
        story = tiny_teller.best_of("It knocked.", 2, config)[0]
    assert story.story.startswith("It knocked.") and is_plain_text(story.story)
    assert 0 <= story.new_tokens <= config.max_new_tokens + FINISH_SENTENCE_TOKENS  # may finish its sentence
    assert 0.0 <= story.confidence <= 1.0
    if config.seed is not None and method == "tell":  # a seed makes a story reproducible
        assert tiny_teller.tell("It knocked.", config).story == story.story
