"""Hostile and malformed input at every entry point: StoryTeller methods, CLI subcommands, the
trainer's config and data readers (and, in test_app_bad_inputs.py, the app's named API).

Each bad input ends in a clear ValueError (exit 2 on the command line); every other input is
served, with control bytes and lone surrogates cleaned away; and the next ordinary request
still succeeds. The library returns plain text: HTML and Markdown are kept verbatim here and
escaped by whatever renders them (see SECURITY.md).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path

import pytest

from horror import cli, storyteller
from horror.cli import SETTING_FLAGS
from horror.storyteller import Story, StoryTeller
from horror.text import MAX_PROMPT_CHARS, clean_text
from train import data
from train.run_config import Source, load_config

HOSTILE_TEXTS = {
    "empty": "",
    "whitespace only": " \t\n\r\u00a0\u2003\u3000 ",
    "one megabyte": "It knocked. " * 87_382,
    "control characters and NUL": "It\x00 knocked\x07 at\x1b[31m the\x7f door.\x00\x85",
    "lone surrogates (invalid UTF-8 from argv)": "\udcffIt knocked.\ud800",
    "emoji and right-to-left": "The door 👻🩸 creaked. הדלת נפתחה. فُتح الباب \u202eevil\u202c",
    "script tag": "<script>alert(1)</script>",
    "img onerror": "<img src=x onerror=alert(1)>",
    "markdown javascript link": "[x](javascript:alert(1))",
}
TOO_LONG = {"one megabyte"}
EMPTY = {"empty", "whitespace only"}
SMALL = {"max_new_tokens": 6, "seed": 1}


def assert_plain_text(text: str) -> None:
    """No control characters, no lone surrogates: safe to print, log, or send as JSON."""
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text), repr(text)
    text.encode("utf-8")


def assert_still_serving(teller: StoryTeller) -> None:
    assert teller.tell("It knocked.", max_new_tokens=4, seed=0).story.startswith("It knocked.")


def call(teller: StoryTeller, method: str, text: str) -> list[Story]:
    if method == "tell":
        return [teller.tell(text, **SMALL)]
    if method == "best_of":
        return teller.best_of(text, 2, **SMALL)
    if method == "stream":
        *partial, final = teller.stream(text, **SMALL)
        for snapshot in partial:
            assert_plain_text(snapshot.story)
        return [final]
    return [teller.continue_chain(["It was late.", text], **SMALL)]


# ----- StoryTeller ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["tell", "best_of", "stream", "continue_chain"])
@pytest.mark.parametrize("name", HOSTILE_TEXTS)
def test_storyteller_refuses_or_cleans_hostile_text_and_keeps_serving(tiny_teller, method, name):
    text = HOSTILE_TEXTS[name]
    if name in TOO_LONG:
        with pytest.raises(ValueError, match=f"limit is {MAX_PROMPT_CHARS:,}"):
            call(tiny_teller, method, text)
    else:
        for story in call(tiny_teller, method, text):
            assert story.prompt.endswith(clean_text(text))  # the user's words survive, cleaned
            for field in (story.prompt, story.story, story.continuation):
                assert_plain_text(field)
    assert_still_serving(tiny_teller)


@pytest.mark.parametrize("name", HOSTILE_TEXTS)
def test_score_refuses_empty_or_oversized_text_and_scores_the_rest(tiny_teller, name):
    text = HOSTILE_TEXTS[name]
    if name in TOO_LONG | EMPTY:
        with pytest.raises(ValueError, match="limit is|empty"):
            tiny_teller.score(text)
    else:
        assert math.isfinite(tiny_teller.score(text).nll_per_token)
        assert math.isfinite(tiny_teller.score("It knocked.", prompt=text).nll_per_token)
    assert_still_serving(tiny_teller)


@pytest.mark.parametrize("value", [b"\xff\xfe invalid utf-8", bytearray(b"x"), 3.5, ["list"], {"a": 1}])
def test_text_that_is_not_a_string_is_a_value_error_everywhere(tiny_teller, value):
    for attempt in (
        lambda: tiny_teller.tell(value),
        lambda: tiny_teller.score(value),
        lambda: tiny_teller.continue_chain(["It was late.", value]),
        lambda: list(tiny_teller.stream(value)),
    ):
        with pytest.raises(ValueError, match="must be text"):
            attempt()


def test_a_ten_thousand_sentence_chain_is_windowed_and_only_its_window_cleaned(tiny_teller, monkeypatch):
    chain = [f"Sentence {i} was whispered at the door. " * 20 for i in range(10_000)]  # ~8 MB
    cleaned = []
    monkeypatch.setattr(storyteller, "clean_text", lambda text, *args: cleaned.append(1) or clean_text(text, *args))
    story = tiny_teller.continue_chain(chain, **SMALL)
    assert story.continuation and story.prompt.endswith("Sentence 9999 was whispered at the door.")
    assert len(cleaned) < 20  # the model's window, not ten thousand sentences


def test_one_oversized_sentence_anywhere_in_a_chain_is_refused(tiny_teller):
    chain = ["x" * (MAX_PROMPT_CHARS + 1)] + ["It was late."] * 9_999
    with pytest.raises(ValueError, match="sentence is 1,001 characters long"):
        tiny_teller.continue_chain(chain)


SLIDERS = SETTING_FLAGS  # every sampling flag the command line takes
VALID_EDGES = {
    ("temperature", 0),
    ("top_k", 0),
    ("min_p", 0),
    ("no_repeat_ngram_size", 0),
    ("seed", 0),
    ("min_p", 1e-300),
}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1, 0, 1e-300, 1e300, 10**30, "3", [1], True])
@pytest.mark.parametrize("name", SLIDERS)
def test_a_slider_value_out_of_range_or_of_the_wrong_type_is_a_value_error_naming_it(tiny_teller, name, value):
    if any((name, value) == edge for edge in VALID_EDGES) and not isinstance(value, bool):
        assert_plain_text(tiny_teller.tell("It knocked.", **{**SMALL, name: value}).story)
        return
    with pytest.raises(ValueError, match=name):
        tiny_teller.tell("It knocked.", **{**SMALL, name: value})


# ----- command line --------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name", HOSTILE_TEXTS)
def test_generate_refuses_or_cleans_a_hostile_prompt(capsys, tiny_model_dir, name):
    status, out, err = run_cli(
        capsys,
        "generate",
        HOSTILE_TEXTS[name],
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "6",
        "--seed",
        "1",
        "--json",
    )
    if name in TOO_LONG:
        assert (status, out) == (2, "") and err.startswith("error: prompt is") and err.count("\n") == 1
        return
    assert status == 0 and err == ""
    story = json.loads(out)
    assert story["prompt"] == clean_text(HOSTILE_TEXTS[name])
    assert_plain_text(story["story"])


@pytest.mark.parametrize(
    "flag",
    [
        "--temperature=nan",
        "--temperature=inf",
        "--temperature=-inf",
        "--temperature=1e308",
        "--top-k=-1",
        "--top-p=0",
        "--top-p=nan",
        "--min-p=2",
        "--repetition-penalty=0",
        "--no-repeat-ngram-size=-1",
        "--max-new-tokens=0",
        "--max-new-tokens=100000000",
        "--seed=-1",
        "--seed=99999999999999999999999",
        "--n=0",
        "--n=100000",
        "--best-of=100000",
    ],
)
def test_a_generate_flag_out_of_range_exits_2_with_one_line(capsys, tiny_model_dir, flag):
    status, out, err = run_cli(capsys, "generate", "It knocked.", "--model", str(tiny_model_dir), flag)
    assert (status, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("flag", ["--top-k=abc", "--n=1.5", "--temperature=warm", "--seed=0x10"])
def test_a_generate_flag_of_the_wrong_type_exits_2_through_argparse(capsys, tiny_model_dir, flag):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--model", str(tiny_model_dir), flag])
    assert exit_info.value.code == 2 and "invalid" in capsys.readouterr().err


BAD_TEXT_FILES = {
    "invalid UTF-8": (b"It knocked.\n\xff\xfe broken\n", "is not UTF-8 text"),
    "only NUL and control bytes": (b"\x00\x00\n\x07\x1b\n  \n", "holds no stories|no prompts"),
    "a one-megabyte line": (b"a" * 1_000_000 + b"\n", "characters long; the limit is"),
}


@pytest.mark.parametrize("command", ["score", "evaluate"])
@pytest.mark.parametrize("name", BAD_TEXT_FILES)
def test_a_bad_story_or_prompt_file_exits_2_saying_what_is_wrong(capsys, tmp_path, tiny_model_dir, command, name):
    content, message = BAD_TEXT_FILES[name]
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    argv = ["score", str(path)] if command == "score" else ["evaluate", "--prompts", str(path), "--samples", "1"]
    status, out, err = run_cli(capsys, *argv, "--model", str(tiny_model_dir))
    assert (status, out) == (2, "") and re.search(message, err) and err.count("\n") == 1


def test_score_skips_control_only_lines_and_scores_hostile_ones(capsys, tmp_path, tiny_model_dir):
    lines = [
        "<script>alert(1)</script>",
        "[x](javascript:alert(1))",
        "The door 👻 creaked. הדלת נפתחה.",
        "It\x00 knocked\x07 at the door.",
        "\x00\x07\x1b",
    ]
    (tmp_path / "stories.txt").write_text("\n".join(lines))
    status, out, err = run_cli(capsys, "score", str(tmp_path / "stories.txt"), "--model", str(tiny_model_dir), "--json")
    assert status == 0, err
    assert json.loads(out)["stories"] == 4


@pytest.mark.parametrize("argv", [["score", "."], ["score", "no-such-file.txt"], ["evaluate", "--prompts", "."]])
def test_a_folder_or_missing_file_exits_2(capsys, tiny_model_dir, argv):
    status, _, err = run_cli(capsys, *argv, "--model", str(tiny_model_dir))
    assert status == 2 and "does not exist or is not a file" in err


# ----- trainer: config and data --------------------------------------------------------------

BAD_CONFIGS = {
    "empty": (b"", "not valid JSON"),
    "whitespace only": (b" \n\t ", "not valid JSON"),
    "NUL bytes": (b"\x00\x00", "not valid JSON"),
    "invalid UTF-8": (b'{"name": "\xff"}', "utf-8"),
    "a list": (b"[]", "must be a JSON object"),
    "one megabyte of unknown field": (b'{"' + b"x" * 1_000_000 + b'": 1}', "unknown train config field"),
    "NaN learning rate": (b'{"pretrain": {"lr": NaN}}', "lr"),
    "infinite learning rate": (b'{"finetune": {"lr": Infinity}}', "finetune.lr"),
    "NaN gradient clip": (b'{"pretrain": {"grad_clip": NaN}}', "grad_clip"),
    "negative weight decay": (b'{"pretrain": {"weight_decay": -0.1}}', "weight_decay"),
    "dropout of 2": (b'{"pretrain": {"dropout": 2}}', "dropout"),
    "negative patience": (b'{"finetune": {"patience": -1}}', "patience"),
    "negative max_steps": (b'{"pretrain": {"max_steps": -5}}', "max_steps"),
    "negative seed": (b'{"seed": -1}', "seed"),
    "tiny vocabulary": (b'{"vocab_size": 10}', "vocab_size"),
    "vocab of the wrong type": (b'{"vocab_size": "big"}', "vocab_size"),
    "infinite source weight": (b'{"pretrain_sources": [{"path": "x.txt", "weight": Infinity}]}', "weight"),
    "negative max_stories": (b'{"pretrain_sources": [{"path": "x.txt", "max_stories": -1}]}', "max_stories"),
    "source without a path": (b'{"pretrain_sources": [{}]}', "path"),
    "sample prompts as one string": (b'{"sample_prompts": "abc"}', "sample_prompts"),
    "unknown model preset": (b'{"model_preset": "<script>"}', "unknown model preset"),
    "unknown model override": (b'{"model_overrides": {"layers": 3}}', "model_overrides"),
    "vocab_size as a model override": (b'{"model_overrides": {"vocab_size": 3}}', "vocab_size"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_a_bad_train_config_is_a_value_error_naming_the_problem(tmp_path, name):
    content, message = BAD_CONFIGS[name]
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "config.json", [])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--pretrain.lr", "NaN"], "lr"),
        (["--pretrain.lr", "-Infinity"], "lr"),
        (["--seed", "\x00"], "seed"),
        (["--name"], "needs a value"),
        (["name", "x"], "expected --field value"),
        (["--pretrain_sources", "{not json"], "pretrain_sources"),
        (["--val_fraction", "Infinity"], "val_fraction"),
    ],
)
def test_a_bad_train_override_is_a_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_the_trainer_exits_2_on_a_bad_config(tmp_path, capsys):
    from train.train import main

    (tmp_path / "config.json").write_bytes(b'{"pretrain": {"lr": Infinity}}')
    assert main(["--config", str(tmp_path / "config.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: pretrain.lr") and "Traceback" not in err


BAD_CORPORA = {
    "empty.txt": (b"", "holds no stories"),
    "whitespace.txt": (b" \n\t\n", "holds no stories"),
    "separators-only.txt": (b"<|endoftext|>\n<|endoftext|>\n", "holds no stories"),
    "invalid-utf8.txt": (b"It knocked.\n\xff\xfe\n", "is not readable UTF-8 text"),
    "invalid-utf8.jsonl": (b'{"text": "\xff"}\n', "is not readable UTF-8 text"),
    "not-xz.txt.xz": (b"plain text, not xz", "is not readable UTF-8 text"),
    "broken.jsonl": (b"{oops\n", ":1: expected a JSON object"),
    "null-text.jsonl": (b'{"text": null}\n', ":1: expected a JSON object with a 'text' string"),
    "number-text.jsonl": (b'{"text": 5}\n{"text": "ok"}\n', ":1: expected"),
    "no-text.jsonl": (b'{"story": "x"}\n', ":1: expected"),
}


@pytest.mark.parametrize("name", BAD_CORPORA)
def test_an_unreadable_corpus_is_a_value_error_naming_the_file(tmp_path, name):
    content, message = BAD_CORPORA[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        data.load_source(Source(str(tmp_path / name)))


def test_a_corpus_of_hostile_lines_is_read_verbatim_one_story_per_line(tmp_path):
    texts = [text for name, text in HOSTILE_TEXTS.items() if name not in EMPTY and "surrogates" not in name]
    Path(tmp_path / "hostile.txt").write_text("\n".join(" ".join(t.split()) for t in texts) + "\n")
    stories = data.load_source(Source(str(tmp_path / "hostile.txt"), format="lines"))["text"]
    assert stories == [" ".join(t.split()) for t in texts]
