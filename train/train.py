"""Train the horror model end to end: tokenizer -> pretrain -> fine-tune -> export.

    accelerate launch train/train.py --config train/configs/cpu.json [--field value ...]
    python train/train.py --config train/configs/smoke.json --out_dir runs/smoke
    python train/train.py --config ... --resume          # continue an interrupted run

The shape is the Accelerate examples': build everything, `accelerator.prepare`, loop,
`accelerator.backward`, `save_state`/`load_state` for checkpoints, metrics reduced across
processes. Data order is our own deterministic sharding, so a resumed run replays exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python train/train.py` from anywhere

from accelerate import Accelerator  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from safetensors.torch import load_model, save_model  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from horror.config import GenerationConfig, model_preset  # noqa: E402
from horror.model import GPT  # noqa: E402
from horror.model_folder import LoadedModel, load_model_folder  # noqa: E402
from horror.storyteller import StoryTeller  # noqa: E402
from horror.tokenizer import StoryTokenizer  # noqa: E402
from train import data  # noqa: E402
from train.export import export_run  # noqa: E402
from train.run_config import PhaseConfig, TrainConfig, load_config  # noqa: E402

PHASES = ("pretrain", "finetune")


# ----- setup --------------------------------------------------------------------------
def build_tokenizer(cfg: TrainConfig, run_dir: Path, pretrain: list[str], finetune: list[str]) -> StoryTokenizer:
    path = run_dir / "tokenizer.json"
    if path.is_file():  # resuming, or another process already trained it
        return StoryTokenizer.load(path)
    if cfg.tokenizer_from:
        return StoryTokenizer.load(cfg.tokenizer_from)
    cap = cfg.tokenizer_stories_per_corpus
    return StoryTokenizer.train(pretrain[:cap] + finetune[:cap], cfg.vocab_size, cfg.min_frequency)


def prepare_rows(cfg: TrainConfig, tokenizer: StoryTokenizer, context_length: int, accelerator: Accelerator):
    """Packed (rows, context+1) token arrays per phase and split, plus facts for the card."""
    cache_dir = Path(cfg.cache_dir)
    rows: dict[str, dict[str, np.ndarray]] = {}
    facts: dict[str, dict] = {}
    for phase, sources in (("pretrain", cfg.pretrain_sources), ("finetune", cfg.finetune_sources)):
        if getattr(cfg, f"skip_{phase}"):
            continue
        if not sources:
            raise ValueError(f"no {phase}_sources given (or set skip_{phase})")
        stories = data.mix_sources(sources, cfg.seed)
        train_stories, val_stories = data.split_train_val(stories, cfg.val_fraction)
        phase_rows, phase_facts = {}, {"sources": [s.path for s in sources], "stories": len(stories)}
        for split, split_stories in (("train", train_stories), ("val", val_stories)):
            with accelerator.main_process_first():  # one process fills the cache, the rest read it
                sequences = data.tokenize_stories(split_stories, tokenizer, cache_dir, f"{phase}-{split}")
            if phase == "finetune":
                low, high = cfg.finetune_min_tokens, cfg.finetune_max_tokens
            else:
                low, high = 2, context_length + 1  # the original kept stories that fit the window
            kept = data.filter_by_length(sequences, low, high)
            if not kept:
                raise ValueError(f"the {phase} {split} split is empty after the {low}-{high} token filter")
            phase_facts[f"{split}_stories"] = len(kept)
            phase_facts[f"{split}_kept_share"] = round(len(kept) / len(sequences), 4)
            phase_facts[f"{split}_tokens"] = int(sum(len(s) for s in kept))
            phase_rows[split] = data.pack(kept, context_length + 1, tokenizer.pad_id)
        rows[phase], facts[phase] = phase_rows, phase_facts
    return rows, facts


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norms and embeddings are left alone."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and "embedding" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(phase: PhaseConfig, total_steps: int):
    """Linear warmup, then cosine decay to `min_lr_ratio` of the peak."""
    def factor(step: int) -> float:
        if step < phase.warmup_steps:
            return (step + 1) / (phase.warmup_steps + 1)
        progress = min(1.0, (step - phase.warmup_steps) / max(1, total_steps - phase.warmup_steps))
        return phase.min_lr_ratio + (1 - phase.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def steps_per_epoch(num_rows: int, phase: PhaseConfig, num_processes: int) -> int:
    return max(1, num_rows // num_processes // (phase.batch_size * phase.grad_accum))


def epoch_batches(rows: np.ndarray, phase: PhaseConfig, seed: int, epoch: int, accelerator: Accelerator):
    """This process's micro-batches for one epoch: a seeded permutation, sharded by rank."""
    order = np.random.default_rng([seed, epoch]).permutation(len(rows))
    per_process = len(order) // accelerator.num_processes
    mine = order[accelerator.process_index * per_process:(accelerator.process_index + 1) * per_process]
    usable = len(mine) // phase.batch_size * phase.batch_size
    return [mine[i:i + phase.batch_size] for i in range(0, usable, phase.batch_size)]


def lm_loss(model: torch.nn.Module, batch: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, int]:
    logits = model(batch[:, :-1])
    targets = batch[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=pad_id)
    return loss, int((targets != pad_id).sum())


@torch.no_grad()
def evaluate(model, rows: np.ndarray, accelerator: Accelerator, pad_id: int, batch_size: int) -> float:
    """Token-weighted validation loss over every process's shard."""
    model.eval()
    total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
    shard = rows[accelerator.process_index::accelerator.num_processes]
    for start in range(0, len(shard), batch_size):
        batch = torch.from_numpy(shard[start:start + batch_size]).to(accelerator.device)
        loss, count = lm_loss(model, batch, pad_id)
        total += torch.tensor([loss.item() * count, count], device=accelerator.device, dtype=torch.float64)
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return (total[0] / total[1].clamp(min=1)).item()


# ----- checkpoints ------------------------------------------------------------------
def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict) -> None:
    """accelerator.save_state into a temp folder, then an atomic rename: a kill mid-write
    leaves the previous checkpoint intact."""
    final, tmp, old = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.old"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_best(accelerator: Accelerator, model, path: Path) -> None:
    if accelerator.is_main_process:
        tmp = path.with_suffix(".tmp")
        save_model(accelerator.unwrap_model(model), str(tmp))
        tmp.replace(path)


def write_samples(accelerator: Accelerator, model, tokenizer, cfg: TrainConfig, phase: str, run_dir: Path) -> None:
    """A few stories through the shared StoryTeller path, printed and saved."""
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    teller = StoryTeller(LoadedModel(unwrapped, tokenizer, GenerationConfig(), run_dir, {}))
    lines = [f"## after {phase}"]
    for index, prompt in enumerate(cfg.sample_prompts):
        story = teller.tell(prompt, seed=cfg.seed + index)
        lines.append(f"- {story.story}")
    unwrapped.train()
    with open(run_dir / "samples.txt", "a") as handle:
        handle.write("\n".join(lines) + "\n\n")
    accelerator.print("\n".join(lines))


# ----- the loop ---------------------------------------------------------------------
def train_phase(name, phase_cfg, model, optimizer, scheduler, rows, cfg, accelerator, run_dir, state, pad_id):
    """Run one phase from wherever `state` says it stands; returns when it ends or stops early."""
    total_steps = steps_per_epoch(len(rows["train"]), phase_cfg, accelerator.num_processes) * phase_cfg.epochs
    if phase_cfg.max_steps:
        total_steps = min(total_steps, phase_cfg.max_steps)
    progress = state.setdefault(name, {"epoch": 0, "batch": 0, "step": 0, "best": None, "stale": 0, "tokens": 0})
    if phase_cfg.dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = phase_cfg.dropout
        for block in accelerator.unwrap_model(model).blocks:
            block.attn.dropout = phase_cfg.dropout
    best_path = run_dir / f"best-{name}.safetensors"
    bar = tqdm(total=total_steps, initial=progress["step"], desc=name, disable=not accelerator.is_local_main_process)
    model.train()
    started, tokens_at_start = time.perf_counter(), progress["tokens"]
    stop = progress["step"] >= total_steps
    while not stop and progress["epoch"] < phase_cfg.epochs:
        batches = epoch_batches(rows["train"], phase_cfg, cfg.seed, progress["epoch"] + 1000 * PHASES.index(name), accelerator)
        groups = [batches[i:i + phase_cfg.grad_accum] for i in range(0, len(batches), phase_cfg.grad_accum)]
        groups = [g for g in groups if len(g) == phase_cfg.grad_accum]
        for group in groups[progress["batch"]:]:
            step_tokens = 0
            for micro, indices in enumerate(group):
                batch = torch.from_numpy(rows["train"][indices]).to(accelerator.device)
                sync = nullcontext() if micro == len(group) - 1 else accelerator.no_sync(model)
                with sync:
                    loss, count = lm_loss(model, batch, pad_id)
                    accelerator.backward(loss / len(group))
                step_tokens += count
            if phase_cfg.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), phase_cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress["step"] += 1
            progress["batch"] += 1
            progress["tokens"] += step_tokens * accelerator.num_processes
            bar.update(1)
            last_of_epoch = progress["batch"] == len(groups)
            done = progress["step"] >= total_steps
            if progress["step"] % phase_cfg.eval_every == 0 or last_of_epoch or done:
                val_loss = evaluate(model, rows["val"], accelerator, pad_id, phase_cfg.batch_size)
                rate = (progress["tokens"] - tokens_at_start) / max(1e-9, time.perf_counter() - started)
                record = {"phase": name, "step": progress["step"], "epoch": progress["epoch"],
                          "train_loss": round(loss.item(), 4), "val_loss": round(val_loss, 4),
                          "lr": scheduler.get_last_lr()[0], "tokens": progress["tokens"], "tokens_per_s": round(rate, 1)}
                state["metrics"].append(record)
                if accelerator.is_main_process:
                    with open(run_dir / "metrics.jsonl", "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                bar.set_postfix(train=f"{loss.item():.3f}", val=f"{val_loss:.3f}")
                if progress["best"] is None or val_loss < progress["best"]:
                    progress["best"], progress["stale"] = val_loss, 0
                    save_best(accelerator, model, best_path)
                else:
                    progress["stale"] += 1
                    if phase_cfg.patience and progress["stale"] >= phase_cfg.patience:
                        accelerator.print(f"{name}: early stop, no improvement in {progress['stale']} evaluations")
                        stop = True
            if last_of_epoch:
                progress["epoch"], progress["batch"] = progress["epoch"] + 1, 0
            if done:
                stop = True
            if stop or progress["step"] % cfg.checkpoint_every == 0:
                state["wall_seconds"] = state.get("wall_seconds", 0) + time.perf_counter() - state.pop("_since", time.perf_counter())
                state["_since"] = time.perf_counter()
                if stop:
                    state["done"].append(name)
                save_checkpoint(accelerator, run_dir, {k: v for k, v in state.items() if k != "_since"})
            if stop:
                break
    bar.close()
    if name not in state["done"]:
        state["done"].append(name)
    accelerator.wait_for_everyone()
    load_model(accelerator.unwrap_model(model), str(best_path))  # continue from the best weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a JSON file from train/configs/")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    parser.add_argument("--push-to-hub", dest="push_repo", default="", help="Hub repo id to upload the model to")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return run(cfg, resume=args.resume, push_repo=args.push_repo or cfg.push_to_hub)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(cfg: TrainConfig, resume: bool = False, push_repo: str = "") -> int:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    mixed = cfg.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(mixed_precision=mixed)
    run_dir = cfg.run_dir
    checkpoint = run_dir / "checkpoint"
    if resume and not checkpoint.is_dir():
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in ("metrics.jsonl", "samples.txt", "tokenizer.json"):
                (run_dir / stale).unlink(missing_ok=True)
        cfg.save(run_dir / "train_config.json")
    set_seed(cfg.seed)
    started = time.perf_counter()

    # Tokenizer: the main process trains (or reuses) it; the others read the saved file.
    if accelerator.is_main_process and not (run_dir / "tokenizer.json").is_file():
        pre = data.mix_sources(cfg.pretrain_sources, cfg.seed) if cfg.pretrain_sources and not cfg.skip_pretrain else []
        fine = data.mix_sources(cfg.finetune_sources, cfg.seed) if cfg.finetune_sources and not cfg.skip_finetune else []
        if cfg.init_from and not cfg.tokenizer_from:
            cfg.tokenizer_from = cfg.init_from  # a model keeps the tokenizer it was trained with
        if not pre and not fine and not cfg.tokenizer_from:
            raise ValueError("nothing to train on: give pretrain_sources and/or finetune_sources")
        build_tokenizer(cfg, run_dir, pre, fine).save(run_dir / "tokenizer.json")
    accelerator.wait_for_everyone()
    tokenizer = StoryTokenizer.load(run_dir / "tokenizer.json")

    if cfg.init_from:
        model = load_model_folder(cfg.init_from).model
        if model.config.vocab_size < tokenizer.vocab_size:
            raise ValueError(f"init_from model has a smaller vocabulary than the tokenizer")
    else:
        model = GPT(model_preset(cfg.model_preset, vocab_size=tokenizer.vocab_size, **cfg.model_overrides))
    model.train()
    context_length = model.config.context_length
    rows, facts = prepare_rows(cfg, tokenizer, context_length, accelerator)
    accelerator.print(f"model: {model.num_parameters():,} parameters; data: {json.dumps(facts)}")

    phases = [p for p in PHASES if p in rows]
    phase_cfgs = {p: getattr(cfg, p) for p in PHASES}
    # One optimizer and scheduler per phase, all prepared up front so that save_state and
    # load_state always see the same set of objects, whichever phase a checkpoint is in.
    optimizers = [torch.optim.AdamW(param_groups(model, phase_cfgs[p].weight_decay), lr=phase_cfgs[p].lr,
                                    betas=(0.9, 0.95)) for p in PHASES]
    schedulers = []
    for phase_name, optimizer in zip(PHASES, optimizers):
        phase = phase_cfgs[phase_name]
        train_rows = len(rows[phase_name]["train"]) if phase_name in rows else 1
        total = steps_per_epoch(train_rows, phase, accelerator.num_processes) * phase.epochs
        total = min(total, phase.max_steps) if phase.max_steps else total
        schedulers.append(torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(phase, total)))
    model, *optimizers = accelerator.prepare(model, *optimizers)
    for scheduler in schedulers:
        accelerator.register_for_checkpointing(scheduler)

    state: dict = {"done": [], "metrics": [], "facts": facts}
    if resume:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if accelerator.is_main_process:  # metrics after the checkpoint will be recomputed
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in state["metrics"]))
        accelerator.print(f"resumed from {checkpoint}: {json.dumps({p: state.get(p) for p in phases})}")
    state["_since"] = time.perf_counter()

    for phase_name in phases:
        optimizer, scheduler = optimizers[PHASES.index(phase_name)], schedulers[PHASES.index(phase_name)]
        if phase_name in state["done"]:
            load_model(accelerator.unwrap_model(model), str(run_dir / f"best-{phase_name}.safetensors"))
            continue
        train_phase(phase_name, phase_cfgs[phase_name], model, optimizer, scheduler, rows[phase_name], cfg,
                    accelerator, run_dir, state, tokenizer.pad_id)
        write_samples(accelerator, model, tokenizer, cfg, phase_name, run_dir)

    state["wall_seconds"] = state.get("wall_seconds", 0) + time.perf_counter() - state.pop("_since")
    if accelerator.is_main_process:
        summary = export_run(cfg, accelerator.unwrap_model(model).eval(), tokenizer, state, run_dir)
        accelerator.print(summary)
        if push_repo:
            from horror.hub import push_model_folder

            push_model_folder(run_dir / "model", push_repo)
            accelerator.print(f"pushed the model to https://huggingface.co/{push_repo}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
