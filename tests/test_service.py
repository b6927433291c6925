"""The app's requests without Gradio: input parsing and the service on the tiny model."""

from __future__ import annotations

import json

import pytest

from horror.chain import Chain
from horror.errors import GenerationError, UserError
from horror.ratelimit import RateLimiter, RateLimitExceeded
from horror.service import StoryService, parse_chain_sentences, parse_seed, person_turn, sampling_overrides
from horror.storyteller import Story


# ----- inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, seed", [("", None), ("  ", None), (None, None), ("42", 42), (7, 7), (3.0, 3)])
def test_parse_seed(value, seed):
    assert parse_seed(value) == seed


@pytest.mark.parametrize("value", ["abc", "-1", 1.5, "1e400", float("inf"), float("nan"), 2**64])
def test_parse_seed_refuses_non_seeds_clearly(value):
    with pytest.raises(ValueError, match="seed must be a whole number"):
        parse_seed(value)


def test_sampling_overrides_drop_blanks_and_parse_the_seed():
    assert sampling_overrides(temperature=0.7, top_k=None, seed="12") == {"temperature": 0.7, "seed": 12}
    with pytest.raises(ValueError, match="unknown setting"):
        sampling_overrides(temprature=1.0)


@pytest.mark.parametrize(
    "value",
    [
        ["A knock.", "Silence."],
        ["A knock.", "  ", "Silence."],
        '["A knock.", "Silence."]',
        [{"author": "person", "sentence": "A knock."}, {"author": "model", "sentence": "Silence."}],
        {"turns": [{"author": "person", "sentence": "A knock."}, {"author": "model", "sentence": "Silence."}]},
        json.dumps(
            {"turns": [{"author": "person", "sentence": "A knock."}, {"author": "model", "sentence": "Silence."}]}
        ),
    ],
)
def test_chain_input_comes_as_sentences_turns_or_json(value):
    assert parse_chain_sentences(value) == ["A knock.", "Silence."]


@pytest.mark.parametrize(
    "value, message",
    [
        (42, "list of sentences"),
        ("[not json", "not valid JSON"),
        ([1, 2], "text"),
        (["x" * 2000], "limit"),
        (["A."] * 500, "at most"),
    ],
)
def test_bad_chain_input_is_refused_clearly(value, message):
    with pytest.raises(ValueError, match=message):
        parse_chain_sentences(value)


def test_person_turn_keeps_one_sentence_and_hands_back_the_rest():
    chain, rest = person_turn(Chain(), "The lake was calm. Too calm. Far too calm.")
    assert chain.sentences == ["The lake was calm."] and rest == "Too calm. Far too calm."


# ----- the service on the tiny model --------------------------------------------------------------
@pytest.fixture()
def service(tiny_teller) -> StoryService:
    return StoryService(tiny_teller, RateLimiter(per_minute=0))


def test_tell_streams_drafts_then_the_story_with_its_seed(service):
    panels = list(service.tell("I heard a knock.", 1, {"seed": 5}, client="me"))
    assert len(panels) >= 2 and all(len(stories) == 1 for stories in panels)
    *drafts, (final,) = panels
    assert all(draft.finish_reason is None for (draft,) in drafts) and final.finish_reason is not None
    assert final.seed == 5 and final.story.startswith("I heard a knock.")
    assert [draft.story for (draft,) in drafts][-1] in final.story
    (again,) = list(service.tell("I heard a knock.", 1, {"seed": 5}, client="me"))[-1]
    assert again.story == final.story  # reproducible


def test_tell_best_of_ranks_several_at_once(service):
    panels = list(service.tell("I heard a knock.", 3, {}, client="me"))
    assert len(panels) == 1 and len(panels[0]) == 3
    confidences = [story.confidence for story in panels[0]]
    assert confidences == sorted(confidences, reverse=True)
    with pytest.raises(UserError, match="best of"):
        service.tell("x", 99, {}, client="me")


def test_the_model_turn_adds_one_sentence_and_retry_replaces_it(service):
    chain = service.model_turn(Chain().add_person_sentence("I heard a knock."), {"seed": 1}, client="me")
    assert len(chain) == 2 and chain.last_author == "model"
    retried = service.retry_model_turn(chain, {"seed": 2}, client="me")
    assert len(retried) == 2 and retried.sentences[0] == "I heard a knock."
    with pytest.raises(UserError, match="nothing to retry"):
        service.retry_model_turn(chain.undo(), {}, client="me")


def test_chain_step_works_past_the_models_window(service):
    sentences = [f"Sentence {n} was whispered at the door." for n in range(120)]  # far past 64 tokens
    assert service.chain_step(sentences, {"seed": 3}, client="me")
    assert (
        service.view_start(Chain.from_dict({"turns": [{"author": "person", "sentence": s} for s in sentences]})) > 100
    )


def test_the_page_dims_exactly_what_the_model_no_longer_reads(service, monkeypatch):
    # One window rule: the sentences the page shows as seen are the ones continue_chain sends.
    sentences = [f"Sentence {n} was whispered at the door." for n in range(40)]
    chain = Chain.from_dict({"turns": [{"author": "person", "sentence": s} for s in sentences]})
    prompts = []
    real_generate = service.teller.engine

    def recording_generate(engine, tokenizer, prompt_ids, settings, *args, **kwargs):
        prompts.append(tokenizer.decode(prompt_ids))
        return original(engine, tokenizer, prompt_ids, settings, *args, **kwargs)

    from horror import storyteller

    original = storyteller.generation.generate
    monkeypatch.setattr(storyteller.generation, "generate", recording_generate)
    service.model_turn(chain, {"seed": 1}, client="me")
    seen = sentences[service.view_start(chain) :]
    assert real_generate is service.teller.engine
    assert prompts[0].strip().startswith(seen[0]) and sentences[service.view_start(chain) - 1] not in prompts[0]


def test_service_requests_are_rate_limited(tiny_teller):
    service = StoryService(tiny_teller, RateLimiter(per_minute=1, burst=2))
    service.score("A knock.", "", client="me")
    service.story("", {"seed": 1}, client="me")
    with pytest.raises(RateLimitExceeded):
        service.chain_step(["A knock."], {}, client="me")
    with pytest.raises(RateLimitExceeded):
        service.tell("A knock.", 1, {}, client="me")  # refused at the call, before a stream starts
    service.score("A knock.", "", client="someone else")
    assert service.random_prompt()  # the curated list costs nothing and is not limited


def test_a_failed_generation_raises_a_clear_error_and_changes_nothing(service, monkeypatch):
    def write_nothing(*args, **kwargs):
        raise GenerationError("the model wrote no sentence; try again or change the settings")

    monkeypatch.setattr(service.teller, "continue_chain", write_nothing)
    chain = Chain().add_person_sentence("A knock.")
    with pytest.raises(GenerationError, match="try again"):
        service.model_turn(chain, {}, client="me")
    assert chain.sentences == ["A knock."]


def test_random_prompts_come_from_the_curated_list_or_the_model(service):
    assert service.random_prompt() in service.teller.curated_prompts()
    assert isinstance(service.model_written_prompt(client="me"), str)
    examples = service.example_prompts(10)
    assert len(examples) == 10 and len(set(examples)) == 10


def test_a_streamed_story_survives_each_step_running_on_another_thread(tiny_teller):
    # Gradio resumes a streaming handler on whichever worker thread is free; inference mode is
    # per thread, so a stream that entered it only once failed on the second step.
    import threading

    steps = tiny_teller.stream("I heard a knock.", seed=5, stop_after_sentences=5, max_new_tokens=20)
    items: list = []
    errors: list = []

    def one_step() -> None:
        try:
            items.append(next(steps, None))
        except Exception as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    while not errors and (not items or items[-1] is not None):
        worker = threading.Thread(target=one_step)
        worker.start()
        worker.join()
    assert errors == [] and isinstance(items[-2], Story) and items[-2].finish_reason is not None
