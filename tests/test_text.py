"""The text rules (horror/text.py): cleaning what a person types, and telling a glued join."""

from __future__ import annotations

import pytest

from horror.text import clean_text, is_glued

FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467"  # 👩‍👩‍👧: a zero-width-joiner sequence
HEART = "\u2764\ufe0f\u200d\U0001f525"  # ❤️‍🔥: a joiner after a variation selector
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # a subdivision flag: tags


@pytest.mark.parametrize(
    "typed, kept",
    [
        ("The door \u202eopened\u202c slowly.", "The door opened slowly."),  # a right-to-left override
        ("zero\u200bwidth\u200cnon\u2060joiner\ufeff.", "zerowidthnonjoiner."),
        ("\u2066isolated\u2069 text", "isolated text"),
        ("a soft\u00adhyphen", "a softhyphen"),
        (f"My family {FAMILY} waited.", f"My family {FAMILY} waited."),
        (f"It burned {HEART}.", f"It burned {HEART}."),
        (f"A flag {ENGLAND} flew.", f"A flag {ENGLAND} flew."),
        ("word\u200dword", "wordword"),  # a joiner between letters joins nothing
    ],
)
def test_invisible_format_characters_go_but_emoji_keep_what_they_need(typed, kept):
    assert clean_text(typed) == kept


@pytest.mark.parametrize(
    "prompt, story, glued",
    [
        ("The sign said 'Keep out.'", "The sign said 'Keep out.' Our lake was calm.", False),
        ("The sign said 'Keep out.'", "The sign said 'Keep out.'amgalicOur old lake", True),
        ("She whispered, \u201cDon't.\u201d", "She whispered, \u201cDon't.\u201dat the stairs", True),
        ("I heard a knock at the back door", "I heard a knock at the back door , and", True),
        ("I heard a knock at the back door", "I heard a knock at the back door, and", False),
        ("I heard a knock at the back door", "I heard a knock at the back doorway.", False),
        ("She said,", "She said, no.", False),
        ("She said,", "She said,no.", True),
        ("It ended.", "It ended.", False),  # nothing new: nothing glued
        ("", "A story of its own.", False),
    ],
)
def test_a_glued_join_is_told_from_a_clean_one(prompt, story, glued):
    assert is_glued(prompt, story) is glued
