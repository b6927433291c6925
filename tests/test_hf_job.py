"""train/hf_job.py: the Hugging Face Jobs submission of the trainer. The dry run prints the job and
touches no network; the token travels as a secret and is never printed. Nothing is submitted."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from train import hf_job

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_jobs_secret_0123456789abcdef"
ARGS = ["--source", "you/two-sentence-horror", "--push-to-hub", "you/horror-15m"]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("hf_job opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def printed_job(output: str) -> dict:
    return json.loads(output.split("\n\nthe same with the hf CLI:\n")[0])


def test_dry_run_prints_the_job_with_the_token_redacted(monkeypatch, capsys, no_network):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert hf_job.main([*ARGS, "--dry-run", "--", "--pretrain.epochs", "5"]) == 0
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    job = printed_job(out)
    assert (job["image"], job["flavor"], job["timeout"]) == (hf_job.DEFAULT_IMAGE, "a100-large", hf_job.DEFAULT_TIMEOUT)
    assert job["secrets"] == {"HF_TOKEN": hf_job.REDACTED}
    assert job["env"]["PYTHONUNBUFFERED"] == "1"
    script = job["command"][2].splitlines()
    assert job["command"][:2] == ["bash", "-c"] and script[0] == "set -euo pipefail"
    assert "hf download you/two-sentence-horror --repo-type space --local-dir /project" in script
    assert "pip install --quiet -r requirements-dev.txt" in script
    assert shlex.split(script[-1]) == [
        "accelerate",
        "launch",
        "--num_processes",
        "1",
        "train/train.py",
        "--config",
        "train/configs/seed-15m.json",
        "--push-to-hub",
        "you/horror-15m",
        "--pretrain.epochs",
        "5",
    ]
    cli = out.split("\n\nthe same with the hf CLI:\n")[1]
    assert shlex.split(cli)[:9] == [
        "hf",
        "jobs",
        "run",
        "--flavor",
        "a100-large",
        "--timeout",
        hf_job.DEFAULT_TIMEOUT,
        "--secrets",
        "HF_TOKEN",
    ]


def test_dry_run_as_a_command_never_prints_the_token_from_the_environment():
    env = {"HF_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train" / "hf_job.py"), *ARGS, "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert printed_job(result.stdout)["secrets"] == {"HF_TOKEN": hf_job.REDACTED}


def test_a_git_source_is_cloned_and_several_gpus_get_one_process_each(monkeypatch, capsys, no_network):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert (
        hf_job.main(
            [
                "--source",
                "https://github.com/you/horror.git",
                "--revision",
                "v2",
                "--push-to-hub",
                "you/horror-43m",
                "--config",
                "train/configs/seed-43m.json",
                "--flavor",
                "a100x4",
                "--dry-run",
            ]
        )
        == 0
    )
    script = printed_job(capsys.readouterr().out)["command"][2]
    assert "git clone --depth 1 --branch v2 https://github.com/you/horror.git /project" in script
    assert "accelerate launch --num_processes 4 --multi_gpu train/train.py --config train/configs/seed-43m" in script


@pytest.mark.parametrize(
    "args, message",
    [
        (["--push-to-hub", "not a repo"], "--push-to-hub must be a Hub repo id"),
        (["--flavor", "a100"], "is not a Jobs flavor; GPU flavors: a100-large"),
        (["--config", "seed-15m.json"], "is not a file of this project"),
    ],
)
def test_bad_arguments_exit_2_before_anything_is_sent(capsys, no_network, args: list[str], message: str):
    assert hf_job.main([*ARGS, *args, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_submitting_sends_the_token_as_a_secret_only(monkeypatch, capsys, no_network):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    sent = {}

    class JobsApi:
        def run_job(self, **kwargs):
            sent.update(kwargs)
            return SimpleNamespace(
                id="job123", url="https://huggingface.co/jobs/you/job123", owner=SimpleNamespace(name="you")
            )

    assert hf_job.main(ARGS, api=JobsApi()) == 0
    assert sent["secrets"] == {"HF_TOKEN": TOKEN}
    assert TOKEN not in repr(hf_job.build_job("you/space", "you/model", token=TOKEN))
    assert TOKEN not in json.dumps({key: value for key, value in sent.items() if key != "secrets"})
    assert (sent["flavor"], sent["image"]) == ("a100-large", hf_job.DEFAULT_IMAGE)
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "hf jobs logs -f you/job123" in out and "HORROR_MODEL=you/horror-15m" in out


def test_without_a_token_nothing_is_submitted(monkeypatch, capsys, no_network):
    monkeypatch.setattr(hf_job, "get_token", lambda: None)

    class JobsApi:
        def run_job(self, **kwargs):
            raise AssertionError("submitted without a token")

    assert hf_job.main(ARGS, api=JobsApi()) == 2
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in capsys.readouterr().err
