"""The trainer's Hub paths, for real, against a stand-in Hub on 127.0.0.1 (tests/hub_standin.py):
the seed presets' datasets downloaded through `datasets.load_dataset`, cached, and read again with
HF_HUB_OFFLINE=1 and the server gone; `--push-to-hub` uploading a model folder that our loader, and
the Space (`HORROR_MODEL=<repo>`), load. Clients run in subprocesses: both libraries read
HF_ENDPOINT and their cache folders when they are imported."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SUBJECTS, TWISTS
from horror.model_folder import load_model_folder
from horror.storyteller import StoryTeller
from hub_standin import HubStandIn

ROOT = Path(__file__).resolve().parent.parent
SEED_CONFIG = json.loads((ROOT / "train" / "configs" / "seed-15m.json").read_text())
TINYSTORIES, HORROR = "roneneldan/TinyStories", "sarthakmasta/TwoSentenceHorrorSynthetic"
PUSHED = "someone/two-sentence-horror-retrained"
TOKEN = "hf_standin_secret_0123456789"
HORROR_FILE = "data/train-00000-of-00001.parquet"  # where the Hub puts a converted text dataset

NAMES = ["Lily", "Tom", "Ben", "Mia", "Sam", "Zoe"]
THINGS = ["a red ball", "a small dog", "a big tree", "a shiny key", "an old box"]


def tinystories(count: int, seed: int) -> list[str]:
    """Stories over two lines, as in TinyStoriesV2-GPT4-*.txt."""
    rng = random.Random(seed)
    return [
        f"Once upon a time, {rng.choice(NAMES)} found {rng.choice(THINGS)}.\n"
        f"{rng.choice(NAMES)} was happy and played all day {i}."
        for i in range(count)
    ]


def horror(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS)} knocked at night {i}. {rng.choice(TWISTS)}" for i in range(count)]


def with_separators(stories: list[str]) -> str:
    return "".join(f"{story}\n<|endoftext|>\n" for story in stories)


def parquet(texts: list[str]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buffer)
    return buffer.getvalue()


TRAIN, VALID, HORROR_STORIES = tinystories(160, 0), tinystories(40, 1), horror(120, 2)


def serve_seed_datasets(hub: HubStandIn) -> None:
    """The datasets of train/configs/seed-*.json, in miniature and laid out as on the Hub."""
    hub.add_repo(
        "dataset",
        TINYSTORIES,
        {
            "README.md": "---\nlicense: cdla-sharing-1.0\n---\n# TinyStories (stand-in)\n",
            "TinyStoriesV2-GPT4-train.txt": with_separators(TRAIN),
            "TinyStoriesV2-GPT4-valid.txt": with_separators(VALID),
            "TinyStories-train.txt": "V1, which no preset reads: never downloaded\n",
        },
    )
    hub.add_repo("dataset", HORROR, {HORROR_FILE: parquet(HORROR_STORIES)})


def client(args: list[str], hub_env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    """A Python process of this project pointed at the stand-in Hub (and no real token or model)."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HORROR_MODEL")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **hub_env)
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600, **kwargs)


LOAD_SOURCES = """
import json, sys
from train import data
from train.run_config import Source
print(json.dumps([list(data.load_source(Source(**s))["text"]) for s in json.loads(sys.argv[1])]))
"""
SEED_SOURCES = SEED_CONFIG["pretrain_sources"] + SEED_CONFIG["finetune_sources"]


def load_seed_sources(hub_env: dict[str, str]) -> list[list[str]]:
    result = client(["-c", LOAD_SOURCES, json.dumps(SEED_SOURCES)], hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_hub_datasets_are_downloaded_once_then_load_offline_from_the_cache(tmp_path: Path):
    with HubStandIn() as hub:
        serve_seed_datasets(hub)
        online = load_seed_sources(hub.env(tmp_path))
    offline = load_seed_sources(hub.env(tmp_path, offline=True))  # the server is gone too

    flatten = lambda stories: [" ".join(story.split()) for story in stories]  # noqa: E731
    assert online == offline == [flatten(TRAIN), flatten(VALID), HORROR_STORIES]
    downloads = {request.rsplit("/", 1)[-1] for request in hub.requests if request.startswith("GET /datasets/")}
    assert downloads == {
        "README.md",
        "TinyStoriesV2-GPT4-train.txt",
        "TinyStoriesV2-GPT4-valid.txt",
        HORROR_FILE.rsplit("/", 1)[-1],
    }  # data_files fetched only what it names
    assert hub.unknown_requests == []


def test_a_hub_dataset_never_downloaded_fails_offline_with_the_reason(tmp_path: Path):
    with HubStandIn() as hub:
        pass
    result = client(["-c", LOAD_SOURCES, json.dumps(SEED_SOURCES[:1])], hub.env(tmp_path, offline=True))
    assert result.returncode == 1
    assert f"could not load the Hub dataset {TINYSTORIES!r}" in result.stderr
    assert "offline" in result.stderr.lower()


@pytest.fixture(scope="module")
def standin_hub() -> HubStandIn:
    with HubStandIn() as hub:
        serve_seed_datasets(hub)
        yield hub


@pytest.fixture(scope="module")
def hub_run(standin_hub: HubStandIn, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The smoke recipe on the seed presets' Hub datasets, pushed to the stand-in at the end:
    (run folder, HF_HOME, everything the trainer printed)."""
    base = tmp_path_factory.mktemp("hub-run")
    result = client(
        [
            str(ROOT / "train" / "train.py"),
            "--config",
            str(ROOT / "train" / "configs" / "smoke.json"),
            "--out_dir",
            str(base / "run"),
            "--cache_dir",
            str(base / "cache"),
            "--pretrain_sources",
            json.dumps(SEED_CONFIG["pretrain_sources"]),
            "--finetune_sources",
            json.dumps(SEED_CONFIG["finetune_sources"]),
            "--push-to-hub",
            PUSHED,
        ],
        {**standin_hub.env(base / "hf-home"), "HF_TOKEN": TOKEN},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run", base / "hf-home", result.stdout + result.stderr


@pytest.mark.slow
def test_the_trainer_reads_the_seed_presets_hub_datasets(hub_run, standin_hub: HubStandIn):
    run_dir, _, _ = hub_run
    card = json.loads((run_dir / "model" / "card.json").read_text())
    read = {(s["source"], s["stories"]) for phase in ("pretrain", "finetune") for s in card["data"][phase]["sources"]}
    assert read == {(TINYSTORIES, len(TRAIN)), (TINYSTORIES, len(VALID)), (HORROR, len(HORROR_STORIES))}
    assert standin_hub.unknown_requests == []


@pytest.mark.slow
def test_push_to_hub_uploads_the_model_folder_and_it_loads(hub_run, standin_hub: HubStandIn, tmp_path: Path):
    run_dir, _, output = hub_run
    arrived = standin_hub.files("model", PUSHED)
    assert arrived == {path.name: path.read_bytes() for path in (run_dir / "model").iterdir()}
    for name, content in arrived.items():
        (tmp_path / name).write_bytes(content)
    assert load_model_folder(tmp_path).model.num_parameters() > 0
    assert f"pushed the model to https://huggingface.co/{PUSHED}" in output
    assert standin_hub.authorizations == {f"Bearer {TOKEN}"}  # the token went to the Hub ...
    assert TOKEN not in output  # ... and nowhere else


@pytest.mark.slow
def test_the_space_serves_the_pushed_model_from_horror_model(hub_run, standin_hub: HubStandIn):
    run_dir, hf_home, _ = hub_run
    serve = (
        "from horror.storyteller import StoryTeller; teller = StoryTeller.load(fallback=False); "
        "print(teller.source.kind, teller.source.requested); print(teller.tell('The door opened.', seed=4).story)"
    )
    result = client(["-c", serve], {**standin_hub.env(hf_home), "HORROR_MODEL": PUSHED})
    assert result.returncode == 0, result.stderr[-3000:]
    kind_line, story = result.stdout.splitlines()[-2:]
    assert kind_line == f"hub {PUSHED}"
    assert story == StoryTeller.load(run_dir / "model", fallback=False).tell("The door opened.", seed=4).story
