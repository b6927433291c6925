"""The command line, called in-process through main(argv) (and once as `python -m horror`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from horror import cli, hub, storyteller
from horror.generation import FINISH_SENTENCE_TOKENS
from horror.model_folder import update_generation_config
from horror.storyteller import StoryTeller

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_generate_json_prints_one_story_object_per_line(capsys, tiny_model_dir):
    status, out, err = run(
        capsys,
        "generate",
        "I heard a knock.",
        "--model",
        str(tiny_model_dir),
        "--n",
        "3",
        "--seed",
        "4",
        "--temperature",
        "0.9",
        "--max-new-tokens",
        "12",
        "--json",
    )
    assert status == 0 and err == ""
    stories = [json.loads(line) for line in out.splitlines()]
    assert len(stories) == 3
    for story in stories:
        assert {"prompt", "story", "continuation", "confidence", "new_tokens", "seconds"} <= set(story)
        assert story["prompt"] == "I heard a knock." and story["story"].startswith("I heard a knock.")
        assert 0 < story["new_tokens"] <= 12 + FINISH_SENTENCE_TOKENS and story["seed"] == 4


def test_generate_is_reproducible_with_a_seed(capsys, tiny_model_dir):
    argv = ("generate", "It knocked.", "--model", str(tiny_model_dir), "--seed", "8", "--json")
    first, again = (json.loads(run(capsys, *argv)[1]) for _ in range(2))
    assert first["story"] == again["story"] and first["confidence"] == again["confidence"]


def test_generate_defaults_come_from_the_models_generation_config(capsys, tiny_model_dir):
    # The tiny model's generation_config.json says max_new_tokens=20; --temperature 0 keeps it writing.
    status, out, _ = run(capsys, "generate", "--model", str(tiny_model_dir), "--json", "--temperature", "0")
    assert status == 0 and json.loads(out)["new_tokens"] <= 20 + FINISH_SENTENCE_TOKENS


def test_generate_plain_output_is_readable(capsys, tiny_model_dir):
    status, out, _ = run(capsys, "generate", "I heard a knock.", "--model", str(tiny_model_dir), "--seed", "1")
    assert status == 0
    assert out.startswith("I heard a knock.") and "confidence" in out


def test_best_of_prints_the_most_confident_first(capsys, tiny_model_dir):
    status, out, _ = run(
        capsys,
        "generate",
        "It knocked.",
        "--model",
        str(tiny_model_dir),
        "--best-of",
        "4",
        "--n",
        "2",
        "--seed",
        "3",
        "--json",
    )
    confidences = [json.loads(line)["confidence"] for line in out.splitlines()]
    assert status == 0 and len(confidences) == 2 and confidences[0] >= confidences[1]


def test_generate_follows_the_models_best_of_unless_told(capsys, tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    update_generation_config(folder, best_of=4, temperature=1.0)
    teller = StoryTeller.load(folder, fallback=False)
    samples = teller.tell_many("It knocked.", 4, seed=3)
    args = ("generate", "It knocked.", "--model", str(folder), "--seed", "3", "--json")
    status, out, _ = run(capsys, *args)
    assert status == 0 and json.loads(out)["story"] == max(samples, key=lambda s: s.confidence).story
    status, out, _ = run(capsys, *args, "--best-of", "1")
    assert status == 0 and json.loads(out)["story"] == teller.tell_many("It knocked.", 1, seed=3)[0].story


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "nan"], "temperature must be a finite number"),
        (["--temperature", "-1"], "temperature must be in"),
        (["--top-p", "1.5"], "top_p must be in"),
        (["--max-new-tokens", "0"], "max_new_tokens must be between"),
        (["--seed", "-3"], "seed must be between"),
        (["--n", "0"], "n must be"),
        (["--n", "3", "--best-of", "2"], "--best-of (2) must be at least --n (3)"),
        (["--best-of", "9"], "best_of must be between 1 and 8"),
    ],
)
def test_bad_settings_exit_2_with_a_one_line_message(capsys, tiny_model_dir, flags, message):
    status, out, err = run(capsys, "generate", "It knocked.", "--model", str(tiny_model_dir), *flags)
    assert status == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_malformed_flags_exit_2_through_argparse(capsys, tiny_model_dir):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--model", str(tiny_model_dir), "--top-k", "1.5"])
    assert exit_info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_score_prints_aggregate_likelihood(capsys, tmp_path, tiny_model_dir, tiny_teller):
    stories = ["My sister whispered at the door every night. But I live alone.", "", "The nurse smiled. I am alone."]
    (tmp_path / "stories.txt").write_text("\n".join(stories) + "\n")
    status, out, err = run(capsys, "score", str(tmp_path / "stories.txt"), "--model", str(tiny_model_dir), "--json")
    assert status == 0 and err == ""
    summary = json.loads(out)
    assert set(summary) >= {"stories", "tokens", "nll_per_token", "perplexity", "bits_per_byte"}
    scores = [tiny_teller.score(text) for text in stories if text]
    tokens = sum(s.tokens for s in scores)
    nll = sum(s.nll_per_token * s.tokens for s in scores)
    assert (summary["stories"], summary["tokens"]) == (2, tokens)  # the blank line is skipped
    assert summary["nll_per_token"] == pytest.approx(nll / tokens)
    assert summary["perplexity"] == pytest.approx(math.exp(nll / tokens))
    assert summary["bits_per_byte"] == pytest.approx(nll / math.log(2) / sum(s.bytes for s in scores))


def test_score_plain_output_is_key_value_lines(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "stories.txt").write_text("It knocked. But I live alone.\n")
    status, out, _ = run(capsys, "score", str(tmp_path / "stories.txt"), "--model", str(tiny_model_dir))
    assert status == 0 and "perplexity: " in out and "bits_per_byte: " in out


@pytest.mark.parametrize("content", [None, "", "\n\n  \n"])
def test_score_of_a_missing_or_empty_file_exits_2(capsys, tmp_path, tiny_model_dir, content):
    path = tmp_path / "stories.txt"
    if content is not None:
        path.write_text(content)
    status, _, err = run(capsys, "score", str(path), "--model", str(tiny_model_dir))
    assert status == 2 and err.startswith("error: ") and str(path) in err


def test_info_json_has_source_size_training_and_shape(capsys, tiny_model_dir, tiny_teller):
    status, out, _ = run(capsys, "info", "--model", str(tiny_model_dir), "--json")
    info = json.loads(out)
    assert status == 0
    assert info["source_kind"] == "folder" and info["revision"] is None and info["notice"] is None
    assert info["parameters"] == tiny_teller.num_parameters and info["trained"] is True
    for key in ("d_model", "n_layers", "n_heads", "d_ff", "vocab_size", "context_length"):
        assert info[key] == getattr(tiny_teller.config, key)


def test_info_labels_an_untrained_model_clearly(capsys, tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / "card.json").write_text('{"untrained": true}')
    status, out, err = run(capsys, "info", "--model", str(folder))
    assert status == 0 and "UNTRAINED" in out and "parameters: " in out and "d_model: 32" in out
    assert "UNTRAINED" in err  # every command warns, not only info


def test_info_shows_the_notice_when_it_fell_back(capsys, monkeypatch, tiny_model_dir):
    monkeypatch.setattr(hub, "BUNDLED_MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(storyteller, "BUNDLED_MODEL_DIR", tiny_model_dir)
    status, out, _ = run(capsys, "info", "--model", "not a repo id!!", "--json")
    assert status == 0 and "nor a valid Hub repo id" in json.loads(out)["notice"]
    status, out, _ = run(capsys, "info", "--model", "not a repo id!!")
    assert status == 0 and "notice: " in out and "(bundled)" in out


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda f: (f / "model.safetensors").write_bytes(b"\0" * 40), "corrupt or truncated"),
        (lambda f: (f / "tokenizer.json").unlink(), "missing tokenizer.json"),
    ],
)
def test_a_broken_model_folder_exits_2_instead_of_falling_back(capsys, tmp_path, tiny_model_dir, break_it, message):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    break_it(folder)
    status, out, err = run(capsys, "info", "--model", str(folder))
    assert (status, out) == (2, "") and message in err and "Traceback" not in err


def test_a_missing_model_folder_exits_2(capsys, tmp_path):
    status, _, err = run(capsys, "generate", "--model", str(tmp_path / "nowhere"))
    assert status == 2 and "does not exist" in err


def test_evaluate_passes_prompts_samples_and_training_texts(capsys, monkeypatch, tmp_path, tiny_model_dir):
    (tmp_path / "prompts.txt").write_text("# first sentences\nIt knocked.\n\n  # --- home\nThe lights went out.\n")
    (tmp_path / "train.txt").write_text("A story. Another one.\n")
    seen = {}

    def fake_evaluate(teller, prompts, samples=3, train_texts=None, seed=0):
        seen.update(prompts=prompts, samples=samples, train_texts=train_texts, seed=seed)
        return {"well_formed": 0.5, "stories": 4, "examples": [{"prompt": "It knocked."}]}

    monkeypatch.setattr("horror.evaluate.evaluate_model", fake_evaluate)
    argv = [
        "evaluate",
        "--prompts",
        str(tmp_path / "prompts.txt"),
        "--samples",
        "2",
        "--train-file",
        str(tmp_path / "train.txt"),
        "--model",
        str(tiny_model_dir),
    ]
    status, out, _ = run(capsys, *argv, "--json")
    assert status == 0 and json.loads(out)["well_formed"] == 0.5
    assert seen == {
        "prompts": ["It knocked.", "The lights went out."],
        "samples": 2,
        "train_texts": ["A story. Another one."],
        "seed": 0,
    }
    status, out, _ = run(capsys, *argv)
    assert status == 0 and "well_formed: 0.5" in out and "stories: 4" in out


def test_evaluate_runs_the_real_metrics_on_a_tiny_model(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "prompts.txt").write_text("It knocked.\nThe lights went out.\n")
    status, out, err = run(
        capsys,
        "evaluate",
        "--prompts",
        str(tmp_path / "prompts.txt"),
        "--samples",
        "1",
        "--model",
        str(tiny_model_dir),
        "--json",
    )
    assert status == 0, err
    assert isinstance(json.loads(out), dict)


def test_evaluate_without_its_prompt_file_exits_2(capsys, tmp_path, tiny_model_dir):
    status, _, err = run(capsys, "evaluate", "--prompts", str(tmp_path / "none.txt"), "--model", str(tiny_model_dir))
    assert status == 2 and "none.txt" in err


def test_python_dash_m_horror_prints_the_fallback_notice_once_and_never_the_token(tmp_path, tiny_model_dir):
    # A real process (the entry point, logging set-up), offline, with nothing in its Hub cache.
    env = {
        **os.environ,
        "HF_TOKEN": "hf_secret_do_not_print",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path),
        "HORROR_MODEL": "someone/not-cached",
    }
    result = subprocess.run(
        [sys.executable, "-m", "horror", "info"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "parameters:" in result.stdout
    assert result.stderr.count("serving the bundled model instead") == 1
    assert "hf_secret" not in result.stdout + result.stderr
