"""train/compare_runs.py: held-out bits/byte, the figure every run in RESULTS.md is compared by."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from train import compare_runs
from train.data import is_validation


@pytest.fixture()
def horror_folder(tmp_path: Path, tiny_stories: list[str]) -> Path:
    folder = tmp_path / "horror"
    folder.mkdir()
    (folder / "writer-1.txt").write_text("\n".join(tiny_stories[:150]) + "\n")
    (folder / "writer-2.txt").write_text("\n".join(tiny_stories[150:]) + "\n")
    return folder


def test_the_held_out_stories_are_the_ones_the_trainer_holds_out(horror_folder, tiny_stories):
    train, held_out = compare_runs.held_out_split(horror_folder, 0.2)
    assert held_out and train and not set(train) & set(held_out)
    assert sorted(train + held_out) == sorted(tiny_stories)
    assert all(is_validation(story, 0.2) for story in held_out)
    assert not any(is_validation(story, 0.2) for story in train)


def test_bits_per_byte_weights_every_story_by_its_length(tiny_teller):
    stories = ["The house was quiet.", "My phone buzzed at midnight and the voice was mine."]
    scores = [tiny_teller.score(story) for story in stories]
    nats = sum(score.nll_per_token * score.tokens for score in scores)
    expected = nats / math.log(2) / sum(len(story.encode()) for story in stories)
    assert compare_runs.bits_per_byte(tiny_teller, stories) == pytest.approx(expected)
    # Not the mean of per-story figures: a long story counts for more than a short one.
    assert expected != pytest.approx(sum(score.bits_per_byte for score in scores) / 2)


def test_bits_only_prints_a_row_per_model(monkeypatch, capsys, horror_folder, tiny_model_dir, tiny_teller):
    argv = ["compare_runs.py", str(tiny_model_dir), "--corpus", str(horror_folder), "--bits-only"]
    monkeypatch.setattr(sys, "argv", argv)
    compare_runs.main()
    out = capsys.readouterr().out
    _, held_out = compare_runs.held_out_split(horror_folder, 0.05)
    assert f"{len(held_out)} held-out stories" in out
    assert f"bits/byte {compare_runs.bits_per_byte(tiny_teller, held_out):.4f}" in out
