"""train/blind_read.py: the stories a reader sees, the key they must not, and the counts."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from horror.storyteller import StoryTeller
from train import blind_read, compare_runs

PROMPTS = ["The house was quiet.", "My phone buzzed at midnight.", "The dog would not stop barking."]


def make(tmp_path: Path, *models: str, seed: int = 5) -> tuple[Path, Path]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment lines are skipped\n" + "\n".join(PROMPTS) + "\n")
    out, key = tmp_path / "read", tmp_path / "key.json"
    args = argparse.Namespace(model=list(models), prompts=prompts, held_out=None, n=60, seed=seed, out=out, key=key)
    blind_read.make(args)
    return out / "stories.md", key


def groups_of(stories_md: Path) -> list[dict[str, str]]:
    """{letter: story} per group, read back from the Markdown the reader gets."""
    groups: list[dict[str, str]] = []
    for line in stories_md.read_text(encoding="utf-8").splitlines():
        if line.startswith("## Group"):
            groups.append({})
        elif line.startswith("- **"):
            letter, story = line[4:].split("**: ", 1)
            groups[-1][letter] = story
    return groups


def test_make_hides_the_models_behind_letters_and_keeps_the_key_apart(tmp_path, tiny_model_dir):
    stories_md, key_path = make(
        tmp_path, f"plain-run={tiny_model_dir}", f'hot-run={tiny_model_dir}:{{"temperature": 1.5}}'
    )
    text = stories_md.read_text(encoding="utf-8")
    assert "plain-run" not in text and "hot-run" not in text and str(tiny_model_dir) not in text
    groups, key = groups_of(stories_md), json.loads(key_path.read_text())
    assert len(groups) == len(PROMPTS) == len(key["groups"])
    teller = StoryTeller.load(tiny_model_dir, fallback=False)
    for index, (group, entry) in enumerate(zip(groups, key["groups"])):
        assert sorted(entry["letters"].values()) == ["hot-run", "plain-run"] and set(group) == set(entry["letters"])
        for letter, story in group.items():
            assert story.startswith(PROMPTS[index])
            # The key says which model wrote it: the same seed and settings tell the same story again.
            overrides = {"temperature": 1.5} if entry["letters"][letter] == "hot-run" else {}
            assert teller.tell(PROMPTS[index], seed=blind_read.prompt_seed(5, index), **overrides).story == story


def test_the_letters_are_shuffled_per_group(tmp_path, tiny_model_dir):
    models = [f"m{i}={tiny_model_dir}" for i in range(4)]
    _, key_path = make(tmp_path, *models)
    orders = {tuple(entry["letters"].values()) for entry in json.loads(key_path.read_text())["groups"]}
    assert len(orders) > 1


def test_best_of_keeps_the_most_confident_of_n(tmp_path, tiny_model_dir):
    stories_md, key_path = make(tmp_path, f'best={tiny_model_dir}:{{"best_of": 3, "temperature": 1.0}}')
    teller = StoryTeller.load(tiny_model_dir, fallback=False)
    for index, group in enumerate(groups_of(stories_md)):
        ranked = teller.best_of(PROMPTS[index], 3, seed=blind_read.prompt_seed(5, index), temperature=1.0)
        assert group["A"] == ranked[0].story
        assert ranked[0].confidence >= max(story.confidence for story in ranked)


@pytest.mark.parametrize(
    "spec, message",
    [("no-folder", "NAME=FOLDER"), ("=folder", "NAME=FOLDER"), ("a=folder:[1]", "JSON object")],
)
def test_bad_model_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        blind_read.parse_model(spec)


def test_two_models_with_one_name_are_refused(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="its own NAME"):
        make(tmp_path, f"a={tiny_model_dir}", f"a={tiny_model_dir}")


def write_key(path: Path) -> None:
    groups = [
        {"group": 1, "letters": {"A": "new", "B": "old"}},
        {"group": 2, "letters": {"A": "old", "B": "new"}},
        {"group": 3, "letters": {"A": "new", "B": "old"}},
    ]
    path.write_text(json.dumps({"models": [["new", "x", {}], ["old", "y", {}]], "groups": groups}))


def judge(group: int, marks: dict[str, tuple[bool, bool]], ranking: list[str]) -> str:
    stories = {letter: {"grammatical": g, "coherent": c} for letter, (g, c) in marks.items()}
    return json.dumps({"group": group, "stories": stories, "ranking": ranking})


def test_score_counts_each_model_through_the_key(tmp_path, capsys):
    write_key(tmp_path / "key.json")
    lines = [
        judge(1, {"A": (True, True), "B": (False, False)}, ["A", "B"]),  # new better
        judge(2, {"A": (True, False), "B": (True, True)}, ["B", "A"]),  # new better
        judge(3, {"A": (True, False), "B": (True, False)}, ["B", "A"]),  # old better
    ]
    (tmp_path / "judgments.jsonl").write_text("\n".join(lines) + "\n\n")
    blind_read.score(argparse.Namespace(key=[tmp_path / "key.json"], judgments=[tmp_path / "judgments.jsonl"]))
    out = capsys.readouterr().out
    assert "new: 3 stories, grammatical 3 (100%, 95% CI 44-100%), coherent setup + twist 2 (67%" in out
    assert "old: 3 stories, grammatical 2 (67%" in out and "coherent setup + twist 0 (0%" in out
    assert "new vs old: new better in 2 (67%" in out and "of 3 groups" in out


def test_score_pools_reads_by_model_name(tmp_path, capsys):
    write_key(tmp_path / "key1.json")
    write_key(tmp_path / "key2.json")
    (tmp_path / "j1.jsonl").write_text(judge(1, {"A": (True, True), "B": (False, False)}, ["A", "B"]))
    (tmp_path / "j2.jsonl").write_text(
        judge(1, {"A": (False, False), "B": (True, False)}, ["B", "A"])
        + "\n"
        + judge(2, {"A": (True, False), "B": (True, False)}, ["A", "B"])
    )
    args = argparse.Namespace(
        key=[tmp_path / "key1.json", tmp_path / "key2.json"], judgments=[tmp_path / "j1.jsonl", tmp_path / "j2.jsonl"]
    )
    blind_read.score(args)
    out = capsys.readouterr().out
    assert "2 reads pooled" in out
    assert "new: 3 stories, grammatical 2 (67%" in out and "old: 3 stories, grammatical 2 (67%" in out
    assert "new vs old: new better in 1 (33%" in out and "of 3 groups" in out
    with pytest.raises(ValueError, match="give one of each per read"):
        blind_read.score(argparse.Namespace(key=args.key, judgments=args.judgments[:1]))


def test_score_says_when_groups_were_not_judged(tmp_path, capsys):
    write_key(tmp_path / "key.json")
    (tmp_path / "judgments.jsonl").write_text(judge(1, {"A": (True, True), "B": (True, True)}, ["A", "B"]))
    blind_read.score(argparse.Namespace(key=[tmp_path / "key.json"], judgments=[tmp_path / "judgments.jsonl"]))
    assert "judgments.jsonl: 2 of 3 groups have no judgment" in capsys.readouterr().out


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "line 1: not a judgment"),
        ('{"group": 1}', "line 1: not a judgment"),
        ('{"group": 1, "stories": ["A"], "ranking": ["A"]}', "line 1: not a judgment"),
        (judge(9, {"A": (True, True)}, ["A"]), "no group 9"),
        (judge(1, {"C": (True, True)}, ["C"]), r"no stor\(ies\) \['C'\]"),
        (judge(1, {"A": (True, True)}, ["A", "A"]), "ranks a story twice"),
        ('{"group": 1, "stories": {"A": {"grammatical": true}}, "ranking": ["A"]}', "grammatical and coherent"),
    ],
)
def test_judgments_that_do_not_match_the_key_are_refused(tmp_path, line, message):
    write_key(tmp_path / "key.json")
    (tmp_path / "judgments.jsonl").write_text(line + "\n")
    with pytest.raises(ValueError, match=message):
        blind_read.score(argparse.Namespace(key=[tmp_path / "key.json"], judgments=[tmp_path / "judgments.jsonl"]))


def test_a_group_judged_twice_is_refused(tmp_path):
    write_key(tmp_path / "key.json")
    line = judge(1, {"A": (True, True), "B": (True, True)}, ["A", "B"])
    (tmp_path / "judgments.jsonl").write_text(f"{line}\n{line}\n")
    with pytest.raises(ValueError, match="line 2: group 1 is judged twice"):
        blind_read.score(argparse.Namespace(key=[tmp_path / "key.json"], judgments=[tmp_path / "judgments.jsonl"]))


@pytest.mark.parametrize(
    "successes, trials, low, high", [(0, 10, 0.0, 0.278), (31, 60, 0.393, 0.638), (60, 60, 0.940, 1.0)]
)
def test_wilson_interval(successes, trials, low, high):
    got = blind_read.wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=0.002)


def test_held_out_adds_the_stories_people_wrote_as_a_reference(tmp_path, tiny_model_dir, tiny_stories):
    corpus = tmp_path / "horror"
    corpus.mkdir()
    (corpus / "writer-1.txt").write_text("\n".join(tiny_stories) + "\nOne sentence only, never a reference.\n")
    out, key_path = tmp_path / "read", tmp_path / "key.json"
    args = argparse.Namespace(
        model=[f"m={tiny_model_dir}"], prompts="unused", n=4, seed=3, out=out, key=key_path, held_out=corpus
    )
    blind_read.make(args)
    key = json.loads(key_path.read_text())
    assert [name for name, _, _ in key["models"]] == ["m", "reference"]
    references = blind_read.reference_stories(corpus, 4, 3)
    _, held_out = compare_runs.held_out_split(corpus, 0.05)
    assert len(references) == 4 and set(references) <= set(held_out)  # never trained on
    for group, entry, reference in zip(groups_of(out / "stories.md"), key["groups"], references):
        letter = {name: letter for letter, name in entry["letters"].items()}
        assert group[letter["reference"]] == reference
        prompt = blind_read.first_sentence(reference)
        assert prompt.endswith("every night.") and group[letter["m"]].startswith(prompt)


def test_held_out_keeps_the_name_reference_for_the_people(tmp_path, tiny_model_dir):
    args = argparse.Namespace(
        model=[f"reference={tiny_model_dir}"],
        prompts="unused",
        n=4,
        seed=3,
        out=tmp_path,
        key=tmp_path / "k",
        held_out="x",
    )
    with pytest.raises(ValueError, match="names the people's stories"):
        blind_read.make(args)


def test_the_command_line_scores_a_read(tmp_path):
    """Run as a script (train/ first on sys.path, where train/train.py could hide the package)."""
    write_key(tmp_path / "key.json")
    (tmp_path / "judgments.jsonl").write_text(judge(1, {"A": (True, False), "B": (False, False)}, ["A", "B"]))
    script = Path(blind_read.__file__)
    command = [sys.executable, str(script), "score", "--key", str(tmp_path / "key.json")]
    result = subprocess.run(
        [*command, "--judgments", str(tmp_path / "judgments.jsonl")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "new: 1 stories, grammatical 1 (100%" in result.stdout
