"""Retrain on Hugging Face Jobs: one command runs the trainer on an A100 and pushes the model to a Hub
repo, which the Space then serves with HORROR_MODEL=<repo>.

    python train/hf_job.py --source you/two-sentence-horror --push-to-hub you/horror-15m --dry-run
    python train/hf_job.py --source you/two-sentence-horror --push-to-hub you/horror-15m
    python train/hf_job.py ... --config train/configs/seed-43m.json -- --pretrain.epochs 5   # trainer overrides

`--source` is the project: a Space id (fetched with `hf download`, LFS files included) or a git URL
(cloned). The job installs the project (`pip install -e .`, then requirements-dev.txt: the `dev` extra)
and runs `accelerate launch train/train.py --config <config> --push-to-hub <repo>`. The token (HF_TOKEN, else the `hf auth login` one) travels as a Jobs
secret: encrypted, never part of the command, never printed. A flavor with several GPUs (a100x4)
runs one process per GPU (`accelerate launch --multi_gpu`); beyond one machine, `accelerate launch`
multi-node on your own cluster is the way. `--dry-run` prints the job and touches no network.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi, JobHardware, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-devel"  # CUDA torch; the job adds the rest
DEFAULT_FLAVOR = "a100-large"
DEFAULT_TIMEOUT = "3h"  # an upper bound: the job stops (and stops billing) by then whatever it is doing
PROJECT_DIR = "/project"
REDACTED = "<secret, not shown>"


@dataclass(frozen=True)
class JobSpec:
    """What `run_job` receives. `secrets` hold values (left out of the repr): print `describe(job)`."""

    image: str
    flavor: str
    timeout: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str | None] = field(default_factory=dict, repr=False)


def gpu_count(flavor: str) -> int:
    """GPUs of a Jobs flavor: "a100x4" -> 4, "a100-large" -> 1."""
    match = re.search(r"x(\d+)$", flavor)
    return int(match.group(1)) if match else 1


def fetch_project(source: str, revision: str | None) -> str:
    """Shell steps that put the project in PROJECT_DIR: a git URL is cloned, a Space id downloaded."""
    if source.startswith(("https://", "http://", "git@")):
        branch = f" --branch {shlex.quote(revision)}" if revision else ""
        return (
            "(command -v git >/dev/null || (apt-get update -qq && apt-get install -y -qq git))\n"
            f"git clone --depth 1{branch} {shlex.quote(source)} {PROJECT_DIR}"
        )
    pinned = f" --revision {shlex.quote(revision)}" if revision else ""
    return (
        'pip install --quiet "huggingface_hub>=1.0"\n'  # the `hf` CLI; uses the HF_TOKEN secret for a private Space
        f"hf download {shlex.quote(source)} --repo-type space --local-dir {PROJECT_DIR}{pinned}"
    )


def build_job(
    source: str,
    push_repo: str,
    config: str = "train/configs/seed-15m.json",
    flavor: str = DEFAULT_FLAVOR,
    timeout: str = DEFAULT_TIMEOUT,
    image: str = DEFAULT_IMAGE,
    revision: str | None = None,
    trainer_args: list[str] | None = None,
    token: str | None = None,
) -> JobSpec:
    """The job that fetches the project, installs it and trains with `accelerate launch`, pushing to `push_repo`."""
    processes = gpu_count(flavor)
    launch = [
        "accelerate",
        "launch",
        "--num_processes",
        str(processes),
        *(["--multi_gpu"] if processes > 1 else []),
        "train/train.py",
        "--config",
        config,
        "--push-to-hub",
        push_repo,
        *(trainer_args or []),
    ]
    script = "\n".join(
        [
            "set -euo pipefail",
            fetch_project(source, revision),
            f"cd {PROJECT_DIR}",
            "pip install --quiet -e .",
            "pip install --quiet -r requirements-dev.txt",
            shlex.join(launch),
        ]
    )
    return JobSpec(
        image=image,
        flavor=flavor,
        timeout=timeout,
        command=["bash", "-c", script],
        env={"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"},
        secrets={"HF_TOKEN": token},
    )


def describe(job: JobSpec) -> str:
    """The job as JSON with every secret value replaced, and the same job as one `hf jobs run` line."""
    secrets = {name: REDACTED if value else "<not set>" for name, value in job.secrets.items()}
    shown = {
        "image": job.image,
        "flavor": job.flavor,
        "timeout": job.timeout,
        "command": job.command,
        "env": job.env,
        "secrets": secrets,
    }
    cli = [
        "hf",
        "jobs",
        "run",
        "--flavor",
        job.flavor,
        "--timeout",
        job.timeout,
        *[part for name in job.secrets for part in ("--secrets", name)],  # a bare name: hf reads it locally
        *[part for name, value in job.env.items() for part in ("-e", f"{name}={value}")],
        job.image,
        *job.command,
    ]
    return json.dumps(shown, indent=2) + "\n\nthe same with the hf CLI:\n" + shlex.join(cli)


def check_arguments(args: argparse.Namespace) -> None:
    """Catch here what would otherwise fail minutes into the job."""
    try:
        validate_repo_id(args.push_to_hub)
    except HFValidationError as error:
        raise ValueError(f"--push-to-hub must be a Hub repo id like you/two-sentence-horror-15m: {error}") from None
    if not (ROOT / args.config).is_file():
        raise ValueError(
            f"--config {args.config} is not a file of this project (presets: train/configs/*.json); "
            f"give it relative to the repository root, as the job runs it there"
        )
    flavors = {hardware.value for hardware in JobHardware}
    if args.flavor not in flavors:
        gpus = sorted(f for f in flavors if not f.startswith("cpu"))
        raise ValueError(f"--flavor {args.flavor!r} is not a Jobs flavor; GPU flavors: {', '.join(gpus)}")


def main(argv: list[str] | None = None, api: HfApi | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="the project: a Space id (you/two-sentence-horror) or git URL")
    parser.add_argument("--revision", help="a branch or tag of --source (a commit too, for a Space); default: main")
    parser.add_argument("--push-to-hub", required=True, help="the model repo to create or update, e.g. you/horror-15m")
    parser.add_argument("--config", default="train/configs/seed-15m.json", help="a preset, relative to the project")
    parser.add_argument("--flavor", default=DEFAULT_FLAVOR, help="Jobs hardware, a100x4 for 4 GPUs (%(default)s)")
    parser.add_argument("--timeout", default=DEFAULT_TIMEOUT, help="the job's limit: 90m, 6h ... (%(default)s)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="a Docker image with CUDA torch")
    parser.add_argument("--dry-run", action="store_true", help="print the job and submit nothing (no network)")
    parser.add_argument("trainer_args", nargs="*", help="after --: trainer overrides, e.g. -- --pretrain.epochs 5")
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    token = get_token()  # HF_TOKEN, else the saved login; read locally, never printed
    job = build_job(
        args.source,
        args.push_to_hub,
        args.config,
        args.flavor,
        args.timeout,
        args.image,
        args.revision,
        args.trainer_args,
        token,
    )
    if args.dry_run:
        print(describe(job))
        return 0
    if not token:
        print(
            "error: no Hugging Face token: set HF_TOKEN or run `hf auth login` (the job needs write access to "
            f"push {args.push_to_hub})",
            file=sys.stderr,
        )
        return 2
    info = (api or HfApi()).run_job(
        image=job.image, command=job.command, env=job.env, secrets=job.secrets, flavor=job.flavor, timeout=job.timeout
    )
    print(
        f"submitted job {info.id}: {info.url}\n"
        f"follow it:  hf jobs logs -f {info.owner.name}/{info.id}\n"
        f"then serve: set HORROR_MODEL={args.push_to_hub} in the Space's Settings -> Variables"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
