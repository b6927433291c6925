"""The generation path: stopping rules, batching, streaming, scoring."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import scripted_model
from horror import generation
from horror.config import MAX_BATCH_SIZE, GenerationConfig
from horror.model_folder import load_model_folder
from horror.text import sentence_ends

GREEDY = GenerationConfig(temperature=0, max_new_tokens=40)


@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("It was late. Then it knocked. ", [12, 29]),
        ("Run! Who? Wait... now", [4, 9, 17]),
        ('He whispered "run." Then', [19]),
        ("She said “stop.” But", [16]),
        ("Mr. Smith came home. Dr. Who", [20]),
        ("No end here", []),
        ("It was late.", []),  # a sentence needs the whitespace after it to count
        ("It ended… Then", [9]),
    ],
)
def test_sentence_ends_follow_punctuation_quotes_and_abbreviations(text, ends):
    assert sentence_ends(text) == ends


def setup_script(tokenizer, prompt: str, continuation: str, eos: bool = True):
    prompt_ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    script = tokenizer.encode(continuation) + ([tokenizer.eos_id] if eos else [])
    return scripted_model(tokenizer, prompt_ids, script), prompt_ids


def test_generation_stops_at_eos_and_leaves_it_out(tiny_tokenizer):
    model, prompt_ids = setup_script(tiny_tokenizer, "It was late.", " Then it knocked.")
    result = generation.generate(model, tiny_tokenizer, prompt_ids, GREEDY)[0]
    assert (result.text, result.finish_reason) == (" Then it knocked.", "eos")
    assert tiny_tokenizer.eos_id not in result.token_ids
    assert result.confidence > 0.99  # the scripted model is sure of every token


def test_allow_eos_false_writes_past_the_end(tiny_tokenizer):
    model, prompt_ids = setup_script(tiny_tokenizer, "It was late.", " Then it knocked.")
    settings = GREEDY.replace(allow_eos=False, max_new_tokens=25)
    result = generation.generate(model, tiny_tokenizer, prompt_ids, settings)[0]
    assert result.text.startswith(" Then it knocked.") and len(result.text) > len(" Then it knocked.")
    assert (len(result.token_ids), result.finish_reason) == (25, "length")


def test_max_new_tokens_caps_the_continuation(tiny_tokenizer):
    model, prompt_ids = setup_script(tiny_tokenizer, "It was late.", " Then it knocked. But I live alone.")
    result = generation.generate(model, tiny_tokenizer, prompt_ids, GREEDY.replace(max_new_tokens=3))[0]
    assert (len(result.token_ids), result.finish_reason) == (3, "length")


@pytest.mark.parametrize(
    ("continuation", "first_sentence"),
    [
        (" Then it knocked. But I live alone.", " Then it knocked."),
        (' She said "run." But I live alone.', ' She said "run."'),
        (" Mr. Smith knocked. But I live alone.", " Mr. Smith knocked."),
    ],
)
def test_stop_after_one_sentence_cuts_at_its_end(tiny_tokenizer, continuation, first_sentence):
    model, prompt_ids = setup_script(tiny_tokenizer, "It was late.", continuation)
    result = generation.generate(model, tiny_tokenizer, prompt_ids, GREEDY.replace(stop_after_sentences=1))[0]
    assert (result.text, result.finish_reason) == (first_sentence, "sentences")
    # The look-ahead token that proved the sentence was over is not counted as written.
    assert tiny_tokenizer.decode(result.token_ids) == first_sentence


def test_stop_after_two_sentences(tiny_tokenizer):
    model, prompt_ids = setup_script(tiny_tokenizer, "Hi.", " One. Two. Three. Four.")
    result = generation.generate(model, tiny_tokenizer, prompt_ids, GREEDY.replace(stop_after_sentences=2))[0]
    assert result.text == " One. Two."


def test_a_batch_holds_n_independent_samples(tiny_model_dir):
    loaded = load_model_folder(tiny_model_dir)
    settings = GenerationConfig(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=12, seed=4, allow_eos=False)
    results = generation.generate(loaded.model, loaded.tokenizer, [loaded.tokenizer.bos_id], settings, 4)
    assert len(results) == 4
    assert all(len(r.token_ids) == 12 and r.seed == 4 for r in results)
    assert len({tuple(r.token_ids) for r in results}) > 1


def test_a_batch_row_that_ends_early_does_not_stop_the_others(tiny_tokenizer):
    model, prompt_ids = setup_script(tiny_tokenizer, "Hi.", " Bye.")
    settings = GenerationConfig(temperature=0, max_new_tokens=10)
    results = generation.generate(model, tiny_tokenizer, prompt_ids, settings, 3)
    assert [r.finish_reason for r in results] == ["eos"] * 3
    assert {r.text for r in results} == {" Bye."}


@pytest.mark.parametrize("num_samples", [0, MAX_BATCH_SIZE + 1])
def test_batch_size_out_of_range_is_refused(tiny_tokenizer, num_samples):
    model, prompt_ids = setup_script(tiny_tokenizer, "Hi.", " Bye.")
    with pytest.raises(ValueError, match="num_samples"):
        generation.generate(model, tiny_tokenizer, prompt_ids, GREEDY, num_samples)


@pytest.mark.parametrize("prompt_ids", [[], [-1], [10**6]])
def test_empty_or_out_of_vocabulary_prompt_ids_are_refused(tiny_tokenizer, prompt_ids):
    model, _ = setup_script(tiny_tokenizer, "Hi.", " Bye.")
    with pytest.raises(ValueError, match="prompt"):
        generation.generate(model, tiny_tokenizer, prompt_ids, GREEDY)


def test_a_prompt_longer_than_the_context_keeps_its_most_recent_tokens(tiny_model_dir):
    loaded = load_model_folder(tiny_model_dir)
    prompt_ids = [loaded.tokenizer.bos_id] + loaded.tokenizer.encode("It knocked again. " * 40)
    assert len(prompt_ids) > loaded.model.config.context_length
    result = generation.generate(loaded.model, loaded.tokenizer, prompt_ids, GREEDY.replace(max_new_tokens=10))[0]
    assert 0 < len(result.token_ids) <= 10


@pytest.mark.parametrize("max_new_tokens", range(1, 13))
def test_stream_never_yields_half_a_character_and_deltas_add_up(tiny_tokenizer, max_new_tokens):
    text = "😀👻 café"
    script = tiny_tokenizer.encode(text)
    assert len(script) == 12  # emoji and é are split into single-byte tokens
    model = scripted_model(tiny_tokenizer, [tiny_tokenizer.bos_id], script)
    settings = GREEDY.replace(max_new_tokens=max_new_tokens)
    *deltas, final = generation.stream(model, tiny_tokenizer, [tiny_tokenizer.bos_id], settings)
    assert all("\ufffd" not in delta and delta for delta in deltas)
    assert "".join(deltas) == final.text  # a length stop mid-character drops the stub
    assert text.startswith(final.text)


def test_stream_ends_with_the_same_generation_as_generate(tiny_tokenizer):
    model, prompt_ids = setup_script(tiny_tokenizer, "It was late.", " Then it knocked. But I live alone.")
    settings = GREEDY.replace(stop_after_sentences=1)
    *deltas, final = generation.stream(model, tiny_tokenizer, prompt_ids, settings)
    assert "".join(deltas) == final.text == generation.generate(model, tiny_tokenizer, prompt_ids, settings)[0].text


def direct_log_probs(model, ids: list[int], start: int) -> list[float]:
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)
    return [log_probs[i - 1, ids[i]].item() for i in range(start, len(ids))]


def test_score_continuation_equals_a_direct_computation(tiny_model_dir):
    loaded = load_model_folder(tiny_model_dir)
    prompt_ids = [loaded.tokenizer.bos_id, *loaded.tokenizer.encode("It was late.")]
    continuation = loaded.tokenizer.encode(" Then it knocked.") + [loaded.tokenizer.eos_id]
    scored = generation.score_continuation(loaded.model, prompt_ids, continuation)
    assert scored == pytest.approx(direct_log_probs(loaded.model, prompt_ids + continuation, len(prompt_ids)), abs=1e-5)
    assert generation.score_continuation(loaded.model, prompt_ids, []) == []


def test_score_continuation_windows_over_texts_longer_than_the_context(tiny_model_dir):
    loaded = load_model_folder(tiny_model_dir)
    context_length = loaded.model.config.context_length
    continuation = loaded.tokenizer.encode("My sister knocked at the door every night. " * 30)
    assert len(continuation) > 3 * context_length
    scored = generation.score_continuation(loaded.model, [loaded.tokenizer.bos_id], continuation)
    assert len(scored) == len(continuation)
    assert all(math.isfinite(lp) and lp <= 0 for lp in scored)
    # The first window sees exactly what a direct pass over it sees.
    ids = [loaded.tokenizer.bos_id] + continuation
    first_window = direct_log_probs(loaded.model, ids[:context_length], 1)
    assert scored[: context_length - 1] == pytest.approx(first_window, abs=1e-5)
    # Later tokens keep half a window of context, not a cold start.
    half = context_length // 2
    window = ids[context_length - half : 2 * context_length - half]
    assert scored[context_length - 1] == pytest.approx(direct_log_probs(loaded.model, window, half)[0], abs=1e-5)


def test_a_paused_stream_leaves_autograd_on_in_the_callers_thread(tiny_tokenizer):
    """A half-read stream must not leave inference mode on: the trainer samples between steps."""
    script = tiny_tokenizer.encode("A knock at the door.")
    model = scripted_model(tiny_tokenizer, [tiny_tokenizer.bos_id], script)
    steps = generation.stream(model, tiny_tokenizer, [tiny_tokenizer.bos_id], GREEDY)
    next(steps)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    steps.close()
