"""The app's named API endpoints through gradio_client, against the app served on a tiny model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from app_server import connect, free_port, serve
from horror.generation import FINISH_SENTENCE_TOKENS
from horror.model_folder import update_generation_config
from horror.ratelimit import RateLimiter
from horror.storyteller import StoryTeller
from horror.text import MAX_PROMPT_CHARS

# Gradio's queue statistics trip pandas deprecation warnings that are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
REPO = Path(__file__).resolve().parent.parent
STORY_KEYS = {"prompt", "story", "continuation", "confidence", "new_tokens", "seconds", "seed", "finish_reason"}


@pytest.fixture(scope="module")
def client(tiny_teller) -> Client:
    with serve(tiny_teller, RateLimiter(per_minute=0)) as url:
        yield connect(url)


def test_only_the_three_named_endpoints_are_public(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/story",
        "/chain_step",
        "/score",
    }


def test_story_continues_the_prompt_and_the_seed_reproduces_it(client):
    story = client.predict("I heard a knock.", seed=11, api_name="/story")
    assert set(story) == STORY_KEYS and story["story"].startswith("I heard a knock.") and story["seed"] == 11
    again = client.predict("I heard a knock.", seed=11, api_name="/story")
    assert {**again, "seconds": 0} == {**story, "seconds": 0}  # everything but the timing


def test_story_takes_best_of_and_returns_the_surest(client, tiny_teller):
    samples = tiny_teller.tell_many("I heard a knock.", 4, seed=11, temperature=1.0)
    story = client.predict("I heard a knock.", temperature=1.0, seed=11, best_of=4, api_name="/story")
    assert story["story"] == max(samples, key=lambda s: s.confidence).story
    single = client.predict("I heard a knock.", temperature=1.0, seed=11, best_of=1, api_name="/story")
    assert single["story"] == tiny_teller.tell("I heard a knock.", temperature=1.0, seed=11).story


def test_story_with_no_prompt_lets_the_model_open_and_takes_sampling_settings(client):
    story = client.predict(
        temperature=0.0, top_k=5, top_p=0.5, min_p=0.1, repetition_penalty=1.1, max_new_tokens=8, api_name="/story"
    )
    assert story["prompt"] == "" and story["story"] and story["new_tokens"] <= 8 + FINISH_SENTENCE_TOKENS


@pytest.mark.parametrize(
    "chain",
    [
        ["I heard a knock.", "Nobody was there."],
        json.dumps(["I heard a knock.", "Nobody was there."]),
        [{"author": "person", "sentence": "I heard a knock."}, {"author": "model", "sentence": "Nobody was there."}],
        [],  # the model opens
    ],
)
def test_chain_step_returns_one_new_sentence(client, chain):
    sentence = client.predict(chain, seed=4, api_name="/chain_step")
    assert isinstance(sentence, str) and sentence.strip()


def test_chain_step_handles_a_chain_longer_than_the_window(client):
    chain = [f"Sentence {n} was whispered through the wall." for n in range(150)]
    assert client.predict(chain, api_name="/chain_step")


def test_score_reports_confidence_and_perplexity(client):
    score = client.predict("The door opened. Nobody was there.", api_name="/score")
    assert 0 < score["confidence"] <= 1 and score["perplexity"] >= 1 and score["tokens"] > 0
    with_prompt = client.predict("Nobody was there.", prompt="The door opened.", api_name="/score")
    assert with_prompt["tokens"] < score["tokens"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": "x", "temperature": 99, "api_name": "/story"}, "temperature must be in"),
        ({"prompt": "x", "top_p": 0, "api_name": "/story"}, "top_p must be in"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1), "api_name": "/story"}, "the limit is"),
        ({"prompt": "x", "seed": "soon", "api_name": "/story"}, "seed must be a whole number"),
        ({"prompt": "x", "max_new_tokens": 10_000, "api_name": "/story"}, "max_new_tokens must be between"),
        ({"prompt": "x", "best_of": 9, "api_name": "/story"}, "best_of must be between 1 and 8"),
        ({"chain": 42, "api_name": "/chain_step"}, "list of sentences"),
        ({"chain": ["ok.", 7], "api_name": "/chain_step"}, "must be text"),
        ({"chain": "[broken", "api_name": "/chain_step"}, "not valid JSON"),
        ({"text": "", "api_name": "/score"}, "empty"),
        ({"text": 12, "api_name": "/score"}, "must be text"),
    ],
)
def test_bad_input_gets_a_clear_error_and_the_app_keeps_serving(client, kwargs, message):
    with pytest.raises(AppError, match=message) as error:
        client.predict(**kwargs)
    assert "Traceback" not in str(error.value)
    assert client.predict("Still here.", seed=1, api_name="/story")["story"].startswith("Still here.")


def test_api_errors_are_plain_text_not_html_escaped(client):
    # Before: "temperature must be in &#91;0.0, 5.0&#93;" (escaped for a toast the API never shows).
    with pytest.raises(AppError) as error:
        client.predict("x", temperature=9, api_name="/story")
    assert "temperature must be in [0.0, 5.0], got 9" in str(error.value) and "&#" not in str(error.value)
    with pytest.raises(AppError) as error:
        client.predict(["<b>ok</b>.", 7], api_name="/chain_step")
    assert "&lt;" not in str(error.value) and "&#" not in str(error.value)


def test_invisible_characters_never_reach_the_story(client):
    story = client.predict("The door\u200b opened\u202e slowly.", seed=2, api_name="/story")
    assert story["prompt"] == "The door opened slowly." and story["story"].startswith("The door opened slowly.")
    assert not any(ch in story["story"] for ch in "\u200b\u202e\u200c\ufeff")


def test_the_api_page_names_and_explains_every_parameter(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name, endpoint in endpoints.items():
        for parameter in endpoint["parameters"]:
            assert parameter["label"] == parameter["parameter_name"], (name, parameter)  # not "1st", "2nd"
            assert len(parameter["python_type"]["description"]) > 10, (name, parameter)


def test_an_unexpected_failure_shows_a_generic_message_not_a_traceback(tiny_teller, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/model.py line 3")

    with serve(tiny_teller, RateLimiter(per_minute=0)) as url:
        monkeypatch.setattr(tiny_teller, "score", explode)
        with pytest.raises(AppError) as error:
            connect(url).predict("A knock.", api_name="/score")
    assert "went wrong" in str(error.value) and "secret" not in str(error.value)


def test_the_rate_limit_from_the_environment_refuses_a_greedy_client(tiny_teller, monkeypatch):
    monkeypatch.setenv("HORROR_RATE_LIMIT_PER_MINUTE", "1")
    monkeypatch.setenv("HORROR_RATE_LIMIT_BURST", "3")
    with serve(tiny_teller) as url:
        greedy = connect(url)
        for _ in range(3):
            greedy.predict("A knock.", api_name="/score")
        with pytest.raises(AppError, match="Too many requests: please wait"):
            greedy.predict("A knock.", seed=1, api_name="/story")
        with pytest.raises(AppError, match="Too many requests"):
            greedy.predict(["A knock."], api_name="/chain_step")
        # With no trusted proxy in front (run locally), a forged X-Forwarded-For buys nothing.
        forger = connect(url, headers={"X-Forwarded-For": "203.0.113.7"})
        with pytest.raises(AppError, match="Too many requests"):
            forger.predict("A knock.", api_name="/score")


def test_the_banner_shows_when_the_app_fell_back_to_the_bundled_model(tiny_teller, monkeypatch):
    monkeypatch.setattr(
        tiny_teller,
        "source",
        dataclasses.replace(
            tiny_teller.source, notice="could not download 'me/<gone>' from the Hub; serving the bundled model instead"
        ),
    )
    components = app.build_demo(tiny_teller).config["components"]
    banner = next(c["props"] for c in components if c["props"].get("elem_id") == "banner")
    assert banner["visible"] and "Serving the bundled model instead of the one asked for." in banner["value"]
    assert "me/&lt;gone&gt;" in banner["value"] and "<gone>" not in banner["value"]


def test_python_app_py_serves_horror_model_on_gradio_server_port(tmp_path):
    """The Space's entry point: $HORROR_MODEL picks the model (a broken folder falls back to the
    bundled one, with the banner saying so) and $GRADIO_SERVER_PORT the port."""
    port = free_port()
    broken = tmp_path / "broken-model"
    broken.mkdir()
    env = {
        **os.environ,
        "HORROR_MODEL": str(broken),
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    try:
        output = []
        for line in process.stdout:  # wait for Gradio to say it is serving
            output.append(line)
            if "Running on local URL" in line:
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30) as response:
            config = response.read().decode()
        assert "Serving the bundled model instead" in config, "".join(output)
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()


def test_best_of_slider_starts_at_the_models_own_best_of(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for best_of in (1, 4):
        update_generation_config(folder, best_of=best_of)
        demo = app.build_demo(StoryTeller.load(folder, fallback=False))
        sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Best of N"]
        assert [slider.value for slider in sliders] == [best_of]
