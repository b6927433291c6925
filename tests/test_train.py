"""The trainer: smoke runs (one process and two over gloo), kill -9 and resume, TensorBoard logging,
data handling, config errors. All data is made here, tiny; nothing reads ../shared or the network
(the Hub paths run against a stand-in Hub in test_train_hub.py)."""

from __future__ import annotations

import json
import lzma
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from horror.storyteller import StoryTeller
from horror.tokenizer import StoryTokenizer
from train import data, trackers
from train.run_config import Source, TrainConfig, load_config
from train.train import main

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "train" / "configs" / "smoke.json")
OPENINGS = ["My sister", "The old man", "Our dog", "The babysitter", "A stranger", "My reflection", "The nurse"]
ACTIONS = ["whispered my name", "knocked twice", "smiled at me", "waited by the stairs", "hummed a song"]
TWISTS = [
    "But I live alone.",
    "Nobody else could see her.",
    "The voice came from inside the closet.",
    "Then I remembered we buried him last spring.",
    "I never had a sister.",
]


def horror_story(rng: random.Random) -> str:
    return f"{rng.choice(OPENINGS)} {rng.choice(ACTIONS)} every night. {rng.choice(TWISTS)}"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TinyStories-style .txt.xz (multi-line stories, `<|endoftext|>` lines) and a horror .txt + .jsonl."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    with lzma.open(folder / "tiny.txt.xz", "wt", encoding="utf-8") as handle:
        for _ in range(250):
            handle.write(
                f"Once upon a time {rng.choice(OPENINGS).lower()} {rng.choice(ACTIONS)}.\n"
                f"{rng.choice(TWISTS)}\n<|endoftext|>\n"
            )
    (folder / "horror.txt").write_text("\n".join(horror_story(rng) for _ in range(150)) + "\n")
    (folder / "horror.jsonl").write_text("".join(json.dumps({"text": horror_story(rng)}) + "\n" for _ in range(40)))
    return folder


def smoke_args(corpus_dir: Path, run_dir: Path, cache_dir: Path) -> list[str]:
    return [
        "--config",
        SMOKE,
        "--out_dir",
        str(run_dir),
        "--cache_dir",
        str(cache_dir),
        "--pretrain_sources",
        json.dumps([{"path": str(corpus_dir / "tiny.txt.xz")}]),
        "--finetune_sources",
        json.dumps(
            [{"path": str(corpus_dir / "horror.txt")}, {"path": str(corpus_dir / "horror.jsonl"), "weight": 0.5}]
        ),
    ]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def smoke_run(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted smoke run, in this process: tokenizer -> pretrain -> fine-tune -> export,
    logging to TensorBoard too (the resume test checks that the tracker changes nothing)."""
    base = tmp_path_factory.mktemp("smoke")
    assert main([*smoke_args(corpus_dir, base / "run", base / "cache"), "--log_with", "tensorboard"]) == 0
    return base / "run"


@pytest.mark.slow
def test_smoke_run_exports_a_model_the_storyteller_loads(smoke_run: Path):
    folder = smoke_run / "model"
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "README.md",
        "card.json",
    ):
        assert (folder / name).is_file(), name
    assert (smoke_run / "loss_curves.png").stat().st_size > 1000
    assert json.loads((smoke_run / "train_config.json").read_text())["name"] == "smoke"
    metrics = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    assert {m["phase"] for m in metrics} == {"pretrain", "finetune"}
    assert {"step", "phase", "train_loss", "val_loss", "lr", "tokens_per_s"} <= set(metrics[0])
    pretrain = [m["val_loss"] for m in metrics if m["phase"] == "pretrain"]
    assert pretrain[-1] < pretrain[0]  # it learned something

    card = json.loads((folder / "card.json").read_text())
    assert card["untrained"] is False and card["parameters"] > 0
    assert set(card["val_loss"]) == set(card["tokens_seen"]) == {"pretrain", "finetune"}
    assert card["data"]["finetune"]["sources"][1]["weight"] == 0.5
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_k"], generation["top_p"]) == (0.4, 30, 0.9)
    assert (generation["repetition_penalty"], generation["max_new_tokens"]) == (1.2, 55)
    assert (folder / "README.md").read_text().startswith("---\nlicense:")
    assert "## after finetune" in (smoke_run / "samples.txt").read_text()

    teller = StoryTeller.load(folder, fallback=False)
    assert teller.is_trained
    story = teller.tell("The door opened.", seed=3)
    assert story.story.startswith("The door opened.")  # a tiny model may end the story at once


@pytest.mark.slow
def test_tensorboard_holds_the_metrics_and_the_hyperparameters(smoke_run: Path):
    """`--log_with tensorboard`: every metrics.jsonl value, tagged by phase at one step count across
    phases, and the resolved train config stored with the run as its hyperparameters."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    logs = smoke_run / trackers.PROJECT
    scalars = EventAccumulator(str(logs))
    scalars.Reload()
    metrics = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    pretrain_steps = max(m["step"] for m in metrics if m["phase"] == "pretrain")
    finetune = [m for m in metrics if m["phase"] == "finetune"]
    assert len(finetune[-1]["val_loss_by_source"]) == 2  # two fine-tuning sources, each its own curve
    for phase, offset in (("pretrain", 0), ("finetune", pretrain_steps)):
        records = [m for m in metrics if m["phase"] == phase]
        logged = {
            f"{phase}/{key}": [m[key] for m in records] for key in ("train_loss", "val_loss", "lr", "tokens_per_s")
        }
        for source in records[-1].get("val_loss_by_source", {}):
            logged[f"{phase}/val_loss/{source}"] = [m["val_loss_by_source"][source] for m in records]
        for tag, values in logged.items():  # TensorBoard keeps float32
            expected = [(m["step"] + offset, np.float32(value)) for m, value in zip(records, values)]
            assert [(event.step, event.value) for event in scalars.Scalars(tag)] == expected, tag

    # add_hparams writes the hyperparameters to an event file of their own, in a folder below.
    (hparams_dir,) = {path.parent for path in logs.glob("*/events.out.tfevents.*")}
    content = EventAccumulator(str(hparams_dir))
    content.Reload()
    session = HParamsPluginData.FromString(content.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = session.session_start_info.hparams
    stored = {key: getattr(value, value.WhichOneof("kind")) for key, value in hparams.items()}
    config = json.loads((smoke_run / "train_config.json").read_text())
    assert stored.keys() == trackers.flat_config(config).keys()
    assert (stored["name"], stored["log_with"], stored["pretrain.lr"]) == ("smoke", "tensorboard", 3e-3)
    assert json.loads(stored["finetune_sources"])[1]["weight"] == 0.5


def test_a_missing_tracker_package_stops_the_run_before_it_starts(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setitem(trackers._INSTALLED, "wandb", lambda: False)
    assert main(["--config", SMOKE, "--out_dir", str(tmp_path / "run"), "--log_with", "wandb"]) == 2
    assert "--log_with wandb needs the wandb package: pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing read, nothing written
    assert main(["--config", SMOKE, "--out_dir", str(tmp_path / "run"), "--log_with", "mlflow"]) == 2
    assert "log_with must be one of trackio, tensorboard, wandb" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(smoke_run: Path, corpus_dir: Path, tmp_path: Path):
    """Run B is killed with SIGKILL right after a fine-tuning checkpoint lands, then resumed; it must
    end exactly where the uninterrupted run A (the smoke run) ended."""
    args = [
        sys.executable,
        str(ROOT / "train" / "train.py"),
        *smoke_args(corpus_dir, tmp_path / "run", tmp_path / "cache"),
    ]
    process = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state_file = tmp_path / "run" / "checkpoint" / "trainer_state.json"
    deadline = time.monotonic() + 240
    killed_at = None
    while process.poll() is None and time.monotonic() < deadline:
        try:
            state = json.loads(state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):  # not there yet, or mid-rename
            state = {}
        finetune_step = state.get("phases", {}).get("finetune", {}).get("step", 0)
        if 0 < finetune_step < 20:  # mid fine-tuning: pretraining done, the second phase under way
            os.kill(process.pid, signal.SIGKILL)
            killed_at = finetune_step
            break
        time.sleep(0.01)
    process.wait()
    assert killed_at is not None, (
        f"run B ended (rc {process.returncode}) before it could be killed: " + process.stderr.read().decode()[-2000:]
    )
    process.stderr.close()
    assert not (tmp_path / "run" / "model").exists()

    resumed = subprocess.run([*args, "--resume"], env=subprocess_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout

    from safetensors.torch import load_file

    weights_a = load_file(smoke_run / "model" / "model.safetensors")
    weights_b = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert (weights_a[name] - weights_b[name]).abs().max().item() <= 1e-6, name
    card_a = json.loads((smoke_run / "model" / "card.json").read_text())
    card_b = json.loads((tmp_path / "run" / "model" / "card.json").read_text())
    assert card_a["val_loss"] == card_b["val_loss"] and card_a["tokens_seen"] == card_b["tokens_seen"]

    def losses(run):
        return [
            (m["phase"], m["step"], m["val_loss"])
            for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        ]

    assert losses(smoke_run) == losses(tmp_path / "run")


@pytest.mark.slow
def test_two_processes_train_over_gloo(corpus_dir: Path, tmp_path: Path, smoke_run: Path):
    with socket.socket() as probe:  # a free port, so parallel test runs do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # `--multi_gpu` is accelerate's torch.distributed launcher; on a machine without CUDA the trainer
    # asks for cpu=True, which makes it DDP over gloo (accelerate's `--cpu` launcher starts one process).
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]
    result = subprocess.run(
        [
            *launch,
            str(ROOT / "train" / "train.py"),
            *smoke_args(corpus_dir, tmp_path / "run", tmp_path / "cache"),
            "--finetune.grad_accum",
            "2",
            "--log_with",
            "tensorboard",
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    steps = {
        m["phase"]: m["step"] for m in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    }
    single = json.loads((smoke_run / "model" / "card.json").read_text())["steps"]
    # Each rank takes half of every epoch's rows (whole batches only), so half the steps of one process.
    rows = int(re.search(r"pretrain: .*?([\d,]+) rows of", result.stdout).group(1).replace(",", ""))
    assert single["pretrain"] == 2 * (rows // 4) and steps["pretrain"] == 2 * (rows // 2 // 4)
    assert result.stdout.count("run smoke finished") == 1  # the summary comes from the main process only
    assert len(list((tmp_path / "run" / trackers.PROJECT).glob("events.out.tfevents.*"))) == 1  # and the tracker
    (checkpoint,) = [tmp_path / "run" / "checkpoint"]
    assert (checkpoint / "random_states_1.pkl").is_file()  # the second rank's RNG is checkpointed too
    StoryTeller.load(tmp_path / "run" / "model", fallback=False).tell("", seed=0)


# ----- bad input ------------------------------------------------------------------
def test_unknown_config_field_exits_2_with_a_message_and_no_traceback(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "train" / "train.py"), "--config", SMOKE, "--learning_rate", "1"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "unknown train config field(s) ['learning_rate']" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "sources, message",
    [
        ('[{"path": "no/such/file.txt"}]', "does not exist"),
        ('[{"path": "EMPTY"}]', "holds no stories"),
        ("[]", "no pretrain_sources given"),
        ('[{"path": "x", "wieght": 2}]', "unknown pretrain_sources entry field(s) ['wieght']"),
    ],
)
def test_bad_sources_exit_2_with_a_clear_message(tmp_path: Path, capsys, sources: str, message: str):
    (tmp_path / "empty.txt").write_text("\n\n")
    sources = sources.replace("EMPTY", str(tmp_path / "empty.txt"))
    code = main(
        [
            "--config",
            SMOKE,
            "--out_dir",
            str(tmp_path / "run"),
            "--pretrain_sources",
            sources,
            "--skip_finetune",
            "true",
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_resume_without_a_checkpoint_and_a_rerun_over_a_finished_run_are_refused(tmp_path: Path, capsys, smoke_run):
    assert main(["--config", SMOKE, "--out_dir", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["--config", SMOKE, "--out_dir", str(smoke_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_overrides_reach_nested_fields_and_keep_types():
    cfg = load_config(
        SMOKE,
        [
            "--pretrain.lr=1",
            "--finetune.epochs",
            "3",
            "--name",
            "123",
            "--finetune_sources",
            '[{"path": "a.txt", "split": "val"}]',
        ],
    )
    assert cfg.pretrain.lr == 1.0 and isinstance(cfg.pretrain.lr, float)
    assert cfg.finetune.epochs == 3 and cfg.name == "123"
    assert cfg.finetune_sources == [Source(path="a.txt", split="val")]
    with pytest.raises(ValueError, match="'lr' must be float"):
        load_config(SMOKE, ["--pretrain.lr", "fast"])
    with pytest.raises(ValueError, match="unknown pretrain field"):
        load_config(SMOKE, ["--pretrain.learning_rate", "1"])


def test_a_phase_given_warmup_steps_is_not_overridden_by_the_default_fraction():
    cfg = TrainConfig(pretrain={"warmup_steps": 7})
    assert cfg.pretrain.warmup_steps == 7 and cfg.pretrain.warmup_fraction == 0.0
    assert TrainConfig().pretrain.warmup_fraction == 0.1  # the original: 10% of pretraining steps


# ----- data -----------------------------------------------------------------------
def test_local_formats_read_the_same_stories(tmp_path: Path):
    stories = ["A first line.\nIts second line.", "Another story."]
    with lzma.open(tmp_path / "a.txt.xz", "wt") as handle:
        handle.write("".join(f"{s}\n<|endoftext|>\n" for s in stories))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in stories))
    expected = ["A first line. Its second line.", "Another story."]
    assert list(data.load_source(Source(str(tmp_path / "a.txt.xz")))["text"]) == expected
    assert list(data.load_source(Source(str(tmp_path / "b.jsonl")))["text"]) == expected
    (tmp_path / "c.txt").write_text("One per line.\n\nTwo per line.\n")
    assert list(data.load_source(Source(str(tmp_path / "c.txt")))["text"]) == ["One per line.", "Two per line."]
    assert len(data.load_source(Source(str(tmp_path), max_stories=3))) == 3  # a folder: every file, in name order


def test_a_missing_local_path_is_not_taken_for_a_hub_id():
    for path in ("./missing/horror.txt", "missing/horror.txt", "/no/such/folder/"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            data.load_source(Source(path))


def test_mojibake_table_restores_tinystories_v1_punctuation():
    assert (
        data.fix_mojibake("â€œHi,â€ she said. Itâ€™s late â€” too lateâ€¦") == "“Hi,” she said. It’s late — too late…"
    )


def test_validation_split_is_by_hash_and_does_not_depend_on_order(tmp_path: Path):
    rng = random.Random(1)
    stories = sorted({f"{horror_story(rng)} {i}" for i in range(2000)})
    (tmp_path / "a.txt").write_text("\n".join(stories))
    (tmp_path / "b.txt").write_text("\n".join(reversed(stories)))
    one = data.build_corpus([Source(str(tmp_path / "a.txt"))], 0.1, seed=0)
    two = data.build_corpus([Source(str(tmp_path / "b.txt"), weight=2.0)], 0.1, seed=5)
    assert sorted(one.val) == sorted(two.val)  # same side whatever the order, weight or seed
    assert 150 < len(one.val) < 250
    assert not set(one.val) & set(one.train)
    assert len(two.train) == 2 * len(one.train) and len(two.val) == len(one.val)  # weights never repeat validation
    held_out = data.build_corpus(
        [Source(str(tmp_path / "a.txt"), split="train"), Source(str(tmp_path / "a.txt"), split="val", max_stories=10)],
        0.1,
        seed=0,
    )
    assert len(held_out.val) == 10 and len(held_out.train) == len(stories)


def test_finetune_length_filter_counts_bos_and_eos_and_is_inclusive():
    tokenizer = StoryTokenizer.train(
        [horror_story(random.Random(i)) for i in range(200)], vocab_size=300, min_frequency=2
    )
    sequences = [np.asarray(tokenizer.encode_story(" ".join(["night"] * n))) for n in range(1, 40)]
    lengths = sorted(len(s) for s in sequences)
    low, high = lengths[5], lengths[20]
    kept = data.filter_by_length(sequences, low, high)
    assert sorted(len(s) for s in kept) == [n for n in lengths if low <= n <= high]
    assert all(s[0] == tokenizer.bos_id and s[-1] == tokenizer.eos_id for s in kept)


def test_default_finetune_filter_keeps_stories_up_to_fifty_words():
    cfg = TrainConfig()
    # A 50-word story is ~70 tokens with an 8K vocabulary, ~60 with 20K: both inside the default window.
    assert cfg.finetune_min_tokens <= 24 and cfg.finetune_max_tokens >= 72


def test_packing_wastes_nothing_and_never_cuts_a_finetune_story():
    rng = np.random.default_rng(0)
    sequences = [np.concatenate([[1], rng.integers(4, 50, size=n), [2]]) for n in rng.integers(10, 60, size=300)]
    stream = data.pack_stream(sequences, 65, pad_id=0, seed=0)
    assert (stream != 0).sum() == sum(len(s) for s in sequences) and (stream[:-1] != 0).all()
    whole = data.pack_whole(sequences, 65, pad_id=0, seed=0)
    assert (whole[:, 0] == 1).all()  # every row starts at a story's <BOS>
    found = []
    for row in whole:
        starts = list(np.flatnonzero(row == 1)) + [int((row != 0).sum())]
        found += [tuple(row[a:b]) for a, b in zip(starts, starts[1:])]
    assert sorted(found) == sorted(tuple(s) for s in sequences)
    assert (whole == 0).mean() < 0.1


def test_ship_model_bundles_a_run_with_the_pretraining_of_another(smoke_run: Path, tmp_path: Path):
    """train/ship_model.py: a fine-tune-only run plus the run that pretrained it -> one bundled model
    whose card has both phases (what the About tab shows), and the curves of both phases."""
    from train.ship_model import ship

    finetune_only = tmp_path / "finetune-run"
    shutil.copytree(smoke_run, finetune_only)
    card = json.loads((finetune_only / "model" / "card.json").read_text())
    for key in ("data", "val_loss", "tokens_seen", "steps", "train_seconds"):
        card[key].pop("pretrain")
    (finetune_only / "model" / "card.json").write_text(json.dumps(card))
    (finetune_only / "metrics.jsonl").write_text(
        "".join(line + "\n" for line in (smoke_run / "metrics.jsonl").read_text().splitlines() if '"finetune"' in line)
    )
    (tmp_path / "card.md").write_text("# A hand-written card\n")

    ship(
        finetune_only,
        smoke_run,
        tmp_path / "card.md",
        tmp_path / "assets" / "model",
        tmp_path / "assets" / "curves.png",
        {"temperature": 0.9, "top_k": 100},
    )
    shipped = json.loads((tmp_path / "assets" / "model" / "card.json").read_text())
    original = json.loads((smoke_run / "model" / "card.json").read_text())
    assert list(shipped["val_loss"]) == ["pretrain", "finetune"] and shipped["val_loss"] == original["val_loss"]
    assert (tmp_path / "assets" / "model" / "README.md").read_text() == "# A hand-written card\n"
    assert (tmp_path / "assets" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    teller = StoryTeller.load(tmp_path / "assets" / "model", fallback=False)
    assert (teller.generation_config.temperature, teller.generation_config.top_k) == (0.9, 100)
    teller.tell("", seed=0)
