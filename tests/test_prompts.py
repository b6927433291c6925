"""The curated first sentences behind the app's 🎲 button and examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from horror.evaluate import is_well_formed, load_lines, prompt_leaks
from horror.storyteller import PROMPTS_FILE

REPO = Path(__file__).resolve().parent.parent


def test_there_are_at_least_a_hundred_distinct_one_sentence_prompts():
    prompts = load_lines(PROMPTS_FILE)
    assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
    assert [prompt for prompt in prompts if not is_well_formed(prompt)] == []


@pytest.mark.slow  # compares every prompt with ~21,000 stories
def test_the_prompts_do_not_leak_the_training_corpus_or_the_evaluation_prompts():
    corpus = sorted((REPO / "data" / "horror").glob("writer-*.txt")) + sorted((REPO / "data" / "chains").glob("*.txt"))
    if not corpus:
        pytest.skip("the horror corpus is not in this checkout")
    others = [story for path in corpus for story in load_lines(path)] + load_lines(REPO / "train" / "eval_prompts.txt")
    assert prompt_leaks(load_lines(PROMPTS_FILE), others) == []


def test_the_storyteller_draws_random_prompts_from_the_file(tiny_teller):
    prompts = load_lines(PROMPTS_FILE)
    assert tiny_teller.curated_prompts() == prompts
    assert {tiny_teller.random_prompt(seed=seed) for seed in range(20)} <= set(prompts)
