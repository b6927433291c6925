"""Story-quality metrics on hand-made texts, and one plumbing run of evaluate_model on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from horror.evaluate import (
    distinct_n,
    evaluate_chain,
    evaluate_model,
    first_sentence,
    has_ngram_loop,
    is_clean_chain_sentence,
    is_well_formed,
    load_lines,
    ngram_set,
    novelty,
    prompt_leaks,
    prompt_seed,
    words,
)
from horror.generation import FINISH_SENTENCE_TOKENS
from horror.storyteller import StoryTeller


# ----- well-formed -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "But I live alone.",
        "Then the knocking came from inside the closet!",
        "Who was holding my hand?",
        "It was never my sister…",
        "She whispered, \u201cDon\u2019t turn around.\u201d",
        'He said, "I buried you last spring."',
        "The door opened by itself (nobody was there.)",
        "  Nobody else could see her.  ",  # surrounding whitespace is not a sentence
        "I waved at Mr. Jenkins and he waved back with both heads.",  # an abbreviation is not an end
    ],
)
def test_one_complete_sentence_is_well_formed(text: str) -> None:
    assert is_well_formed(text)


def test_two_sentences_are_not_well_formed() -> None:
    assert not is_well_formed("I turned around. Nobody was there.")


def test_a_sentence_without_a_terminator_is_not_well_formed() -> None:
    assert not is_well_formed("Then the lights went out and")


def test_three_words_are_too_few_to_be_well_formed() -> None:
    assert not is_well_formed("I live alone.")


def test_text_after_the_sentence_end_is_not_well_formed() -> None:
    assert not is_well_formed("Nobody was there. And then")


def test_an_empty_continuation_is_not_well_formed() -> None:
    assert not is_well_formed("")


def test_a_repeated_three_gram_is_a_loop() -> None:
    looping = "She said that she was here and she was here all along."
    assert has_ngram_loop(looping)
    assert not is_well_formed(looping)


def test_a_loop_ignores_case_and_punctuation() -> None:
    assert has_ngram_loop("The door, the door opened, THE DOOR OPENED.")


def test_a_repeated_bigram_is_not_a_loop() -> None:
    assert is_well_formed("In the morning I found her in the cellar.")


# ----- words and n-grams -----------------------------------------------------------------
def test_words_are_lowercased_and_stripped_of_punctuation() -> None:
    assert words("Don't OPEN the door, Maya!") == ["don't", "open", "the", "door", "maya"]


def test_ngram_set_holds_each_distinct_ngram_once() -> None:
    assert ngram_set("The dog, the dog barked.", 2) == {("the", "dog"), ("dog", "the"), ("dog", "barked")}


def test_ngram_set_of_a_short_text_is_empty() -> None:
    assert ngram_set("too short", 3) == set()


# ----- novelty ---------------------------------------------------------------------------
TRAIN = ["My grandmother always set an extra plate at Thanksgiving for whoever needs it."]


def test_a_continuation_sharing_an_8gram_with_training_is_not_novel() -> None:
    copied = "Grandma ALWAYS set an extra plate at Thanksgiving, for us."  # "always ... for": 8 words
    assert novelty([copied], TRAIN) == 0.0


def test_a_continuation_sharing_only_7_words_in_a_row_is_novel() -> None:
    near = "She always set an extra plate at Thanksgiving too."  # "always ... thanksgiving": 7 words
    assert novelty([near], TRAIN) == 1.0


def test_novelty_is_the_share_of_novel_continuations() -> None:
    copied = "always set an extra plate at Thanksgiving for"
    fresh = "The plate was licked clean by morning, though nobody sat there."
    assert novelty([copied, fresh, fresh, fresh], TRAIN) == 0.75


def test_novelty_of_nothing_is_zero() -> None:
    assert novelty([], TRAIN) == 0.0


# ----- distinct-n ------------------------------------------------------------------------
def test_distinct_1_counts_unique_words_over_all_words() -> None:
    # words: the cat the dog | the cat -> 6 words, 3 unique
    assert distinct_n(["The cat, the dog.", "the CAT"], 1) == pytest.approx(3 / 6)


def test_distinct_2_does_not_join_ngrams_across_texts() -> None:
    # bigrams: (the cat) (cat the) (the dog) | (the cat) -> 4 bigrams, 3 unique
    assert distinct_n(["The cat, the dog.", "the CAT"], 2) == pytest.approx(3 / 4)


def test_distinct_n_is_one_when_nothing_repeats() -> None:
    assert distinct_n(["one two three", "four five"], 1) == 1.0


def test_distinct_n_of_texts_too_short_is_zero() -> None:
    assert distinct_n(["one"], 2) == 0.0


# ----- evaluation prompts must not leak training text ----------------------------------------
REPO = Path(__file__).resolve().parent.parent
STORY = "We rented a cabin by the lake for the long weekend. The previous guests never checked out."


def test_first_sentence_stops_at_the_first_sentence_end() -> None:
    assert first_sentence(STORY) == "We rented a cabin by the lake for the long weekend."


def test_a_prompt_sharing_an_8gram_with_a_story_leaks() -> None:
    leaks = prompt_leaks(["Last year we rented a cabin by the lake for the summer."], [STORY])
    assert len(leaks) == 1 and leaks[0]["reason"].startswith("shares")


def test_a_reworded_copy_of_a_first_sentence_leaks() -> None:
    leaks = prompt_leaks(["For the long weekend we rented a lake cabin."], [STORY])
    assert len(leaks) == 1 and "similarity" in leaks[0]["reason"]


def test_a_prompt_on_the_same_theme_in_new_words_is_clean() -> None:
    assert prompt_leaks(["My uncle owns a fishing shack on a frozen pond."], [STORY]) == []


def test_the_shipped_eval_prompts_are_single_sentences_that_do_not_leak_the_corpus() -> None:
    corpus = sorted((REPO / "data" / "horror").glob("writer-*.txt")) + sorted((REPO / "data" / "chains").glob("*.txt"))
    if not corpus:
        pytest.skip("the horror corpus is not in this checkout")
    prompts = load_lines(REPO / "train" / "eval_prompts.txt")
    assert len(prompts) >= 45 and len(set(prompts)) == len(prompts)
    assert [prompt for prompt in prompts if not is_well_formed(prompt)] == []
    train_texts = [story for path in corpus for story in load_lines(path)]
    assert prompt_leaks(prompts, train_texts) == []


# ----- files and seeds -------------------------------------------------------------------
def test_load_lines_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text(
        "# a comment\n\n  The lights went out.  \n   # indented comment\nMy dog barked.\n", encoding="utf-8"
    )
    assert load_lines(path) == ["The lights went out.", "My dog barked."]


def test_prompt_seeds_differ_per_prompt_and_per_run_seed() -> None:
    seeds = {prompt_seed(run, index) for run in range(3) for index in range(50)}
    assert len(seeds) == 150


# ----- the driver --------------------------------------------------------------------------
def test_evaluate_model_summarises_two_prompts_of_two_samples(tiny_teller: StoryTeller) -> None:
    prompts = ["My sister knocked at the door every night.", "Our dog stared under my bed."]
    summary = evaluate_model(tiny_teller, prompts, samples=2, train_texts=["My sister knocked at the door."], seed=1)
    assert summary["prompts"] == 2 and summary["samples"] == 2 and summary["stories"] == 4
    for key in ("well_formed", "novelty", "distinct_1", "distinct_2", "mean_confidence"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["seconds_per_story"] >= 0.0
    assert 0 < summary["mean_new_tokens"] <= tiny_teller.generation_config.max_new_tokens + FINISH_SENTENCE_TOKENS
    assert [example["prompt"] for example in summary["examples"]] == prompts
    assert all(set(example) == {"prompt", "continuation", "well_formed"} for example in summary["examples"])


def test_evaluate_model_is_deterministic_for_a_seed(tiny_teller: StoryTeller) -> None:
    first = evaluate_model(tiny_teller, ["The nurse smiled at midnight."], samples=2, seed=3)
    second = evaluate_model(tiny_teller, ["The nurse smiled at midnight."], samples=2, seed=3)
    assert first["examples"] == second["examples"] and first["distinct_2"] == second["distinct_2"]
    assert first["novelty"] is None  # no training texts given


@pytest.mark.parametrize("samples", [0, 17, 2.5, True])
def test_evaluate_model_rejects_a_bad_sample_count(tiny_teller: StoryTeller, samples: object) -> None:
    with pytest.raises(ValueError, match="samples"):
        evaluate_model(tiny_teller, ["A prompt."], samples=samples)  # type: ignore[arg-type]


def test_evaluate_model_rejects_no_prompts(tiny_teller: StoryTeller) -> None:
    with pytest.raises(ValueError, match="no prompts"):
        evaluate_model(tiny_teller, [])


# ----- story chain ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sentence",
    [
        "Then it knocked.",
        '"Who is there," she asked.',
        "At three it stopped...",
        "It was mine.”",
        "(Nobody answered.)",
        "1999 was the last good year!",
    ],
)
def test_a_clean_chain_sentence_starts_and_ends_like_one(sentence: str) -> None:
    assert is_clean_chain_sentence(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "now., they'd left.",
        "We ate dinner..",
        "then it knocked.",
        "It knocked",
        "It knocked. It left.",
        ", then a voice.",
        "It stopped,. Then",
        ".",
    ],
)
def test_chain_artefacts_and_broken_sentences_are_not_clean(sentence: str) -> None:
    assert not is_clean_chain_sentence(sentence)


def test_evaluate_chain_grows_each_prompt_and_counts_clean_sentences(tiny_teller: StoryTeller) -> None:
    summary = evaluate_chain(tiny_teller, ["It was late.", "The lights went out."], turns=3, seed=1)
    assert (summary["chains"], summary["sentences"]) == (2, 6)
    assert 0.0 <= summary["clean"] <= 1.0
    assert summary["examples"][0].startswith("It was late.")
    with pytest.raises(ValueError, match="turns"):
        evaluate_chain(tiny_teller, ["It was late."], turns=0)
