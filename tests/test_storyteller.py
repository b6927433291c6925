"""StoryTeller: telling, streaming, chains, scoring, bad input, and loading (errors and fallback)."""

from __future__ import annotations

import json
import math
import shutil
import threading
import unicodedata
from pathlib import Path

import pytest
import torch

from conftest import scripted_model
from horror import hub, storyteller
from horror.config import GenerationConfig
from horror.errors import GenerationError
from horror.generation import FINISH_SENTENCE_TOKENS
from horror.model_folder import LoadedModel, ModelLoadError, update_generation_config
from horror.storyteller import StoryTeller
from horror.text import MAX_PROMPT_CHARS, clean_text

GREEDY = GenerationConfig(temperature=0, max_new_tokens=40)


def scripted_teller(tokenizer, prompt: str, continuation: str, eos: bool = True) -> StoryTeller:
    """A StoryTeller whose model writes `continuation` after `prompt` (greedy or not)."""
    prompt_ids = [tokenizer.bos_id, *tokenizer.encode(prompt)] if prompt else [tokenizer.bos_id]
    script = tokenizer.encode(continuation) + ([tokenizer.eos_id] if eos else [])
    model = scripted_model(tokenizer, prompt_ids, script)
    return StoryTeller(LoadedModel(model, tokenizer, GREEDY, Path("scripted"), {}))


# ----- telling -------------------------------------------------------------------------------


def test_tell_continues_the_prompt(tiny_teller):
    story = tiny_teller.tell("I heard a knock.", seed=1)
    assert story.prompt == "I heard a knock."
    assert story.story.startswith("I heard a knock.")
    # the model folder's generation_config says 20; a cut-off sentence may take a few more to end
    assert 0 < story.new_tokens <= 20 + FINISH_SENTENCE_TOKENS
    assert set(story.to_dict()) >= {"prompt", "story", "continuation", "confidence", "new_tokens", "seconds"}
    assert 0.0 < story.confidence <= 1.0 and story.seconds >= 0


def test_scripted_story_is_prompt_plus_continuation(tiny_tokenizer):
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then it knocked.")
    story = teller.tell("It was late.")
    assert (story.story, story.continuation, story.finish_reason) == (
        "It was late. Then it knocked.",
        "Then it knocked.",
        "eos",
    )


def test_empty_prompt_lets_the_model_write_from_bos(tiny_tokenizer):
    teller = scripted_teller(tiny_tokenizer, "", "The door opened.")
    for prompt in ("", None, "   \n\t  "):  # whitespace only counts as empty
        story = teller.tell(prompt)
        assert (story.prompt, story.story) == ("", "The door opened.")


def test_control_characters_nul_and_lone_surrogates_are_cleaned_from_the_prompt(tiny_teller):
    assert tiny_teller.tell("I heard\x00 a\x07 knock.\r\n", seed=1).prompt == "I heard a knock."
    assert tiny_teller.tell("I saw \ud800 it.", seed=1).prompt == "I saw ? it."
    assert clean_text("\x1b[31mred\x1b[0m") == "[31mred [0m"


def test_stories_hold_no_control_characters_even_from_a_random_model(tiny_teller):
    for story in tiny_teller.tell_many("", 8, temperature=2.0, top_k=0, top_p=1.0, seed=3):
        for text in (story.story, story.continuation):
            assert not any(unicodedata.category(ch) == "Cc" for ch in text)


def test_a_prompt_over_the_limit_is_a_value_error_naming_the_limit(tiny_teller):
    with pytest.raises(ValueError, match=f"{MAX_PROMPT_CHARS:,}"):
        tiny_teller.tell("a" * (MAX_PROMPT_CHARS + 1))
    assert tiny_teller.tell("It knocked. " * 83, seed=0).new_tokens > 0  # just under the limit is fine


@pytest.mark.parametrize("prompt", [123, b"bytes", ["a list"]])
def test_a_prompt_that_is_not_text_is_a_value_error(tiny_teller, prompt):
    with pytest.raises(ValueError, match="prompt must be text"):
        tiny_teller.tell(prompt)


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": math.nan},
        {"temperature": math.inf},
        {"temperature": -1},
        {"temperature": "warm"},
        {"top_p": 0},
        {"top_k": 2.5},
        {"max_new_tokens": 10**9},
        {"seed": -5},
        {"repetition_penalty": 0},
        {"no_repeat_ngram_size": -1},
        {"best_of": 0},
        {"best_of": 9},
        {"best_of": 2.5},
        {"sampler": "beam"},
    ],
)
def test_bad_settings_are_value_errors(tiny_teller, settings):
    with pytest.raises(ValueError):
        tiny_teller.tell("It knocked.", **settings)


@pytest.mark.parametrize("n", [0, 17, -1, 2.5, "3", True, None])
def test_bad_story_counts_are_value_errors(tiny_teller, n):
    with pytest.raises(ValueError, match="n must be"):
        tiny_teller.tell_many("It knocked.", n)


def test_tell_many_writes_n_stories_reproducibly(tiny_teller):
    stories = tiny_teller.tell_many("It knocked.", 3, seed=5, temperature=1.0)
    again = tiny_teller.tell_many("It knocked.", 3, seed=5, temperature=1.0)
    assert len(stories) == 3
    assert [s.story for s in stories] == [s.story for s in again]
    assert len({s.story for s in stories}) > 1
    assert stories[0].story != tiny_teller.tell_many("It knocked.", 3, seed=6, temperature=1.0)[0].story


def test_best_of_ranks_stories_by_confidence(tiny_teller):
    ranked = tiny_teller.best_of("It knocked.", 5, seed=2, temperature=1.0)
    confidences = [s.confidence for s in ranked]
    assert len(ranked) == 5 and confidences == sorted(confidences, reverse=True)


def test_tell_keeps_the_surest_of_the_settings_best_of(tiny_teller):
    settings = {"seed": 2, "temperature": 1.0}
    samples = tiny_teller.tell_many("It knocked.", 5, **settings)
    surest = max(samples, key=lambda story: story.confidence)
    assert tiny_teller.tell("It knocked.", best_of=5, **settings).story == surest.story
    assert tiny_teller.best_of("It knocked.", None, best_of=5, **settings)[0].story == surest.story
    # Best of 1 (the default) is the one sample, which is not always the surest of five.
    assert (
        tiny_teller.tell("It knocked.", **settings).story
        == tiny_teller.tell_many("It knocked.", 1, **settings)[0].story
    )


def test_a_model_folder_can_recommend_its_best_of(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    update_generation_config(folder, best_of=4)
    teller = StoryTeller.load(folder, fallback=False)
    assert teller.generation_config.best_of == 4
    settings = {"seed": 7, "temperature": 1.0}
    surest = max(teller.tell_many("It knocked.", 4, **settings), key=lambda story: story.confidence)
    assert teller.tell("It knocked.", **settings).story == surest.story
    # A stream stays one sample.
    assert (
        list(teller.stream("It knocked.", **settings))[-1].story
        == teller.tell("It knocked.", best_of=1, **settings).story
    )


def test_concurrent_tells_give_the_same_stories_as_sequential_ones(tiny_teller):
    expected = [tiny_teller.tell("It knocked.", seed=seed).story for seed in range(4)]
    results: dict[int, str] = {}

    def tell(seed: int) -> None:
        results[seed] = tiny_teller.tell("It knocked.", seed=seed).story

    threads = [threading.Thread(target=tell, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[seed] for seed in range(4)] == expected


# ----- streaming -----------------------------------------------------------------------------


def test_stream_grows_the_story_then_ends_with_the_story(tiny_tokenizer):
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then 😀 knocked.")
    *drafts, final = teller.stream("It was late.")
    assert all(draft.finish_reason is None and draft.seed == final.seed for draft in drafts)
    texts = [draft.story for draft in drafts]
    assert all("\ufffd" not in text for text in texts)
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert texts[-1] == final.story == "It was late. Then 😀 knocked."
    assert final.finish_reason == "eos"


def test_stream_matches_tell_for_the_same_seed(tiny_teller):
    *_, final = tiny_teller.stream("It knocked.", seed=9)
    assert final.story == tiny_teller.tell("It knocked.", seed=9).story


# ----- story chain ---------------------------------------------------------------------------


def test_continue_chain_returns_exactly_one_sentence(tiny_tokenizer):
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then it knocked. But I live alone.", eos=False)
    story = teller.continue_chain(["It was late."])
    assert (story.continuation, story.finish_reason) == ("Then it knocked.", "sentences")


def test_continue_chain_does_not_stop_at_eos(tiny_tokenizer):
    # A chain always wants a sentence; <EOS> before it is banned, so the model writes on.
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then it knocked.", eos=True)
    assert teller.continue_chain(["It was late."]).continuation.startswith("Then it knocked.")


def spy_on_generate(monkeypatch) -> list[tuple[list[int], bool]]:
    """Record (prompt ids, allow_eos) of every generation call StoryTeller makes."""
    calls: list[tuple[list[int], bool]] = []
    real_generate = storyteller.generation.generate

    def spy(model, tokenizer, prompt_ids, settings, *args, **kwargs):
        calls.append((list(prompt_ids), settings.allow_eos, kwargs["boundary"].healed))
        return real_generate(model, tokenizer, prompt_ids, settings, *args, **kwargs)

    monkeypatch.setattr(storyteller.generation, "generate", spy)
    return calls


def test_a_chain_opens_with_the_chain_token_and_lets_the_model_end(tiny_tokenizer, monkeypatch):
    # A model trained on chains starts them with <CHAIN>; it is not forced past <EOS>.
    assert tiny_tokenizer.chain_id is not None
    calls = spy_on_generate(monkeypatch)
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then it knocked.", eos=True)
    assert teller.continue_chain(["It was late."]).continuation == "Then it knocked."
    # (the prompt's last token, ".", is backed off and written again: token healing)
    assert calls == [([tiny_tokenizer.chain_id, *tiny_tokenizer.encode("It was late.")][:-1], True, ".")]


def test_a_chain_model_that_ends_mid_sentence_is_retried_then_kept_writing(tiny_tokenizer, monkeypatch):
    calls = spy_on_generate(monkeypatch)
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then it", eos=True)
    story = teller.continue_chain(["It was late."], max_new_tokens=8)
    assert [allow_eos for _, allow_eos, _ in calls] == [True, True, False]  # the last try bans <EOS>
    assert story.continuation.startswith("Then it")


def test_a_model_without_the_chain_token_is_kept_writing_past_eos(tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(tiny_tokenizer, "chain_id", None)
    calls = spy_on_generate(monkeypatch)
    teller = scripted_teller(tiny_tokenizer, "It was late.", " Then it knocked.", eos=True)
    teller.continue_chain(["It was late."])
    assert calls == [([tiny_tokenizer.bos_id, *tiny_tokenizer.encode("It was late.")][:-1], False, ".")]


def test_continue_chain_windows_a_long_chain(tiny_teller):
    sentences = [f"Sentence {i} was whispered at the door." for i in range(500)]
    story = tiny_teller.continue_chain(sentences, seed=1)
    assert story.continuation
    assert len(story.prompt) < len(" ".join(sentences))
    assert story.prompt.endswith("Sentence 499 was whispered at the door.")


def test_continue_chain_opens_an_empty_chain(tiny_teller):
    story = tiny_teller.continue_chain([], seed=1)
    assert story.prompt == "" and story.continuation


@pytest.mark.parametrize("sentences", ["not a list", None, [1, 2], [None, 3]])
def test_continue_chain_rejects_what_is_not_a_list_of_text(tiny_teller, sentences):
    with pytest.raises(ValueError):
        tiny_teller.continue_chain(sentences)


def test_continue_chain_raises_when_the_model_writes_nothing(tiny_tokenizer):
    teller = scripted_teller(tiny_tokenizer, "It was late.", "     ", eos=False)
    with pytest.raises(GenerationError, match="no sentence"):
        teller.continue_chain(["It was late."], max_new_tokens=5)


# ----- scoring -------------------------------------------------------------------------------


def test_score_is_the_models_likelihood_of_the_story(tiny_teller):
    text = "My sister whispered at the door every night. But I live alone."
    score = tiny_teller.score(text)
    tokenizer, model = tiny_teller.tokenizer, tiny_teller.model
    ids = tokenizer.encode_story(text)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids]))[0], dim=-1)
    nll = -sum(log_probs[i - 1, ids[i]].item() for i in range(1, len(ids))) / (len(ids) - 1)
    assert score.tokens == len(ids) - 1  # every story token plus <EOS>
    assert score.bytes == len(text.encode("utf-8"))
    assert score.nll_per_token == pytest.approx(nll, rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(nll), rel=1e-5)
    assert score.bits_per_byte == pytest.approx(nll * score.tokens / math.log(2) / score.bytes, rel=1e-5)
    assert set(score.to_dict()) == {"tokens", "bytes", "nll_per_token", "perplexity", "bits_per_byte", "confidence"}


def test_a_scripted_model_finds_its_own_story_certain(tiny_tokenizer):
    teller = scripted_teller(tiny_tokenizer, "", "The door opened.")
    assert teller.score("The door opened.").perplexity == pytest.approx(1.0, abs=1e-3)


def test_score_after_a_prompt_scores_only_the_continuation(tiny_teller):
    score = tiny_teller.score("But I live alone.", prompt="It knocked.")
    assert score.tokens == len(tiny_teller.tokenizer.encode(" But I live alone."))
    assert math.isfinite(score.perplexity)


def test_score_of_a_text_longer_than_the_context_is_finite(tiny_teller):
    score = tiny_teller.score("My sister whispered at the door every night. " * 40)
    assert score.tokens > 3 * tiny_teller.config.context_length
    assert math.isfinite(score.nll_per_token) and score.nll_per_token > 0


@pytest.mark.parametrize("text", ["", "   ", None, "x" * 20_001])
def test_score_rejects_empty_or_oversized_text(tiny_teller, text):
    with pytest.raises(ValueError):
        tiny_teller.score(text)


# ----- info and prompts ----------------------------------------------------------------------


def test_info_reports_source_size_and_shape(tiny_teller, tiny_model_dir):
    info = tiny_teller.info()
    assert info["source_kind"] == "folder" and info["path"] == str(tiny_model_dir)
    assert info["parameters"] == tiny_teller.num_parameters > 0
    assert info["notice"] is None and info["trained"] is True
    for key in ("d_model", "n_layers", "n_heads", "d_ff", "vocab_size", "context_length"):
        assert info[key] == getattr(tiny_teller.config, key)
    json.dumps(info)  # everything in it can be printed as JSON


def test_a_model_marked_untrained_says_so(tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / "card.json").write_text('{"untrained": true}')
    teller = StoryTeller.load(folder, fallback=False)
    assert teller.is_trained is False and teller.info()["trained"] is False


def test_random_prompt_is_reproducible_with_a_seed(tiny_teller):
    assert tiny_teller.random_prompt(seed=3) == tiny_teller.random_prompt(seed=3)
    assert isinstance(tiny_teller.random_prompt(seed=4, model_written=True), str)


# ----- loading: errors and fallback ----------------------------------------------------------


def broken_copy(tmp_path: Path, tiny_model_dir: Path, break_it) -> Path:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    break_it(folder)
    return folder


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


BREAKAGES = {
    "missing weights": (lambda f: (f / "model.safetensors").unlink(), "missing model.safetensors"),
    "missing tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "missing tokenizer.json"),
    "truncated weights": (
        lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-64]),
        "corrupt or truncated",
    ),
    "garbage weights": (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 100), "corrupt or truncated"),
    "config from another model": (lambda f: edit_config(f, n_embd=64), "does not match config.json: size mismatch"),
    "config with more layers": (lambda f: edit_config(f, n_layer=3), "does not match config.json: missing tensors"),
    "tokenizer bigger than vocab": (lambda f: edit_config(f, vocab_size=300), "tokenizer has 400 tokens"),
    "config not an object": (lambda f: (f / "config.json").write_text("[]"), "not a valid model config"),
    "config not json": (lambda f: (f / "config.json").write_text("{oops"), "not a valid model config"),
    "bad generation config": (
        lambda f: (f / "generation_config.json").write_text('{"temperature": -1}'),
        "generation_config.json is invalid",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_model_folder_is_a_clear_model_load_error(tmp_path, tiny_model_dir, breakage):
    break_it, message = BREAKAGES[breakage]
    folder = broken_copy(tmp_path, tiny_model_dir, break_it)
    with pytest.raises(ModelLoadError, match=message):
        StoryTeller.load(folder, fallback=False)


def test_a_missing_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StoryTeller.load(tmp_path / "nowhere")


@pytest.fixture
def bundled_is_tiny(monkeypatch, tiny_model_dir):
    """Point the 'bundled model' at the tiny test model (the real one is not a test fixture)."""
    monkeypatch.setattr(hub, "BUNDLED_MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(storyteller, "BUNDLED_MODEL_DIR", tiny_model_dir)
    monkeypatch.delenv("HORROR_MODEL", raising=False)
    return tiny_model_dir


def test_a_broken_folder_falls_back_to_the_bundled_model_with_a_notice(tmp_path, tiny_model_dir, bundled_is_tiny):
    folder = broken_copy(tmp_path, tiny_model_dir, BREAKAGES["truncated weights"][0])
    teller = StoryTeller.load(folder)
    assert teller.source.kind == "bundled" and teller.source.path == bundled_is_tiny
    assert "corrupt or truncated" in teller.notice and "bundled" in teller.notice
    assert teller.tell("It knocked.", seed=1).story


def test_the_model_comes_from_horror_model_when_no_source_is_given(monkeypatch, tiny_model_dir):
    monkeypatch.setenv("HORROR_MODEL", str(tiny_model_dir))
    teller = StoryTeller.load()
    assert teller.source.kind == "folder" and teller.notice is None
