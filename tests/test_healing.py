"""Where the prompt ends and the story goes on (horror/healing.py): token healing, the space after a
finished clause, and no glued continuations for endings people type."""

from __future__ import annotations

import pytest

from conftest import scripted_model
from horror import generation
from horror.config import GenerationConfig
from horror.generation import FINISH_SENTENCE_TOKENS
from horror.healing import Boundary, boundary_mask, heal
from horror.hub import BUNDLED_MODEL_DIR
from horror.model_folder import LoadedModel
from horror.storyteller import StoryTeller
from horror.text import CLAUSE_ENDS, is_glued

ENDINGS = [
    "The sign said 'Keep out.'",
    "She whispered, \u201cDon't open the door.\u201d",
    "I heard a knock at the back door",
    "My son drew one more (a tall one)",
    'The babysitter texted: "Who is the man in the hall?"',
    "I waited for the footsteps to stop...",
    "Nobody answered when I called her name\u2026",
    "The note said \u2018Don\u2019t look behind you.\u2019",
    "Grandma always said [the dead knock twice]",
    "The mirror fogged up and a finger wrote HELP",
    "I told my daughter to stop talking to the wall,",
    "My reflection blinked first;",
]


def test_healing_backs_off_the_last_token_and_asks_for_its_text_again(tiny_tokenizer):
    ids = [tiny_tokenizer.bos_id, *tiny_tokenizer.encode("It knocked.")]
    healed_ids, boundary = heal(tiny_tokenizer, ids, "It knocked.")
    assert healed_ids == ids[:-1] and boundary == Boundary(tiny_tokenizer.decode(ids[-1:]), space_after=True)
    assert "It knocked.".endswith(boundary.healed)
    words = [tiny_tokenizer.bos_id, *tiny_tokenizer.encode("at the door")]
    assert heal(tiny_tokenizer, words, "at the door")[1].space_after is False
    assert heal(tiny_tokenizer, [tiny_tokenizer.bos_id], "") == ([tiny_tokenizer.bos_id], Boundary())


def test_the_boundary_accepts_the_healed_text_then_only_whitespace():
    boundary = Boundary(".'", space_after=True)
    assert boundary.fits(".") and boundary.fits(".'") and boundary.fits(".' Our")
    assert not boundary.fits(".'amgalic") and not boundary.fits("x") and not boundary.fits("'")
    assert Boundary(" door").fits(" doorway") and Boundary(" door").fits(" door,")
    assert not boundary.settled(".'") and boundary.settled(".' ") and Boundary(" door").settled(" door")


def test_the_mask_bans_end_of_story_until_the_healed_text_is_back(tiny_tokenizer):
    masks = boundary_mask(tiny_tokenizer, tiny_tokenizer.vocab_size)
    boundary = Boundary(".", space_after=True)
    first = masks.allowed(boundary, "")
    assert not first[tiny_tokenizer.eos_id] and first[tiny_tokenizer.encode(".")[0]]
    after = masks.allowed(boundary, ".")
    assert after[tiny_tokenizer.eos_id]
    assert all(masks.texts[i][0].isspace() for i in after.nonzero().flatten().tolist() if i != tiny_tokenizer.eos_id)


@pytest.mark.parametrize("prompt", ENDINGS)
def test_after_a_finished_clause_any_model_goes_on_after_a_space(tiny_teller, prompt):
    # The tiny model has random weights, so only the boundary rule keeps it from gluing (this
    # failed before token healing: the story went on "'Keep out.'amgalic" or "door , and").
    for seed in range(4):
        story = tiny_teller.tell(prompt, seed=seed)
        new = story.story[len(prompt) :]
        assert story.story.startswith(prompt), story.story  # nothing inserted at the join
        if prompt[-1] in CLAUSE_ENDS and new:
            assert new[0] == " ", story.story
        for draft in tiny_teller.stream(prompt, seed=seed):
            assert draft.story.startswith(prompt) or prompt.startswith(draft.story)


def test_the_bundled_model_glues_no_continuation_onto_any_ending():
    teller = StoryTeller.load(BUNDLED_MODEL_DIR, fallback=False)
    glued = [
        story
        for prompt in ENDINGS
        for seed in range(4)
        if is_glued(prompt, story := teller.tell(prompt, seed=seed).story)
    ]
    assert glued == []


def test_a_chain_sentence_starts_after_a_space(tiny_teller):
    for seed in range(4):
        story = tiny_teller.continue_chain(["She said 'Go.'"], seed=seed)
        assert not is_glued(story.prompt, story.prompt + " " + story.continuation)
        assert story.continuation and not story.continuation[0].isspace()


# ----- a story cut off at the token limit -----------------------------------------------------
def scripted_teller(tokenizer, prompt: str, continuation: str) -> StoryTeller:
    prompt_ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    model = scripted_model(tokenizer, prompt_ids, tokenizer.encode(continuation) + [tokenizer.eos_id])
    settings = GenerationConfig(temperature=0.0, max_new_tokens=4)
    return StoryTeller(LoadedModel(model, tokenizer, settings, None, {}))


def test_a_sentence_cut_at_the_limit_is_finished_within_a_small_budget(tiny_tokenizer):
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then my sister knocked at the door every night.")
    story = teller.tell("It was late.")
    assert story.story == "It was late. Then my sister knocked at the door every night."
    assert 4 < story.new_tokens <= 4 + FINISH_SENTENCE_TOKENS


def test_a_sentence_too_long_to_finish_ends_visibly(tiny_tokenizer):
    endless = " Then my sister knocked"
    while len(tiny_tokenizer.encode(endless)) <= 4 + FINISH_SENTENCE_TOKENS:  # longer than the budget
        endless += " and knocked"
    endless += "."
    teller = scripted_teller(tiny_tokenizer, "It was late.", endless)
    story = teller.tell("It was late.")
    assert story.finish_reason == "length" and story.story.endswith("\u2026") and "." not in story.continuation
    assert story.new_tokens == 4 + FINISH_SENTENCE_TOKENS


def test_raw_generation_without_a_sentence_rule_keeps_its_exact_limit(tiny_tokenizer):
    prompt_ids = [tiny_tokenizer.bos_id, *tiny_tokenizer.encode("It was late.")]
    model = scripted_model(tiny_tokenizer, prompt_ids, tiny_tokenizer.encode(" Then my sister knocked at the door."))
    result = generation.generate(model, tiny_tokenizer, prompt_ids, GenerationConfig(temperature=0, max_new_tokens=3))
    assert len(result[0].token_ids) == 3 and result[0].finish_reason == "length"
