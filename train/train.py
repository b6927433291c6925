"""Train the horror model end to end: tokenizer -> pretrain -> fine-tune -> export.

    accelerate launch train/train.py --config train/configs/seed-15m.json
    python train/train.py --config train/configs/cpu.json --pretrain.epochs 2   # any field: --field value
    python train/train.py --config train/configs/cpu.json --resume              # continue an interrupted run
    python train/train.py --config train/configs/cpu.json --log_with tensorboard  # or trackio, wandb

The shape is the Accelerate examples': build everything, `accelerator.prepare`, loop with
`accelerator.accumulate` / `accelerator.backward`, `save_state` / `load_state` for checkpoints,
metrics reduced across processes. Batches come from our own seeded sampler (a permutation per
epoch, sharded by rank), so the checkpoint's (epoch, batch) position replays a run exactly.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

# `python train/train.py` puts train/ first on sys.path, where train/train.py would hide the `train`
# package (installed: pip install -e .): take that entry off before importing the package.
if __name__ == "__main__" and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from horror.config import model_preset
from horror.model import GPT
from horror.model_folder import LoadedModel, ModelLoadError, load_model_folder
from horror.storyteller import StoryTeller
from horror.tokenizer import StoryTokenizer
from train import data, trackers
from train.export import ORIGINAL_SAMPLING, export_run, summary
from train.hardware import training_precision
from train.run_config import PhaseConfig, TrainConfig, load_config

PHASES = ("pretrain", "finetune")


# ----- setup --------------------------------------------------------------------------
def model_folder(source: str) -> Path:
    """A model folder on disk, or the files of a Hub repo id."""
    if Path(source).expanduser().exists():
        return Path(source).expanduser()
    from horror.hub import download_from_hub

    try:
        return download_from_hub(source)
    except Exception as error:  # offline, no such repo, not a valid id ...
        raise FileNotFoundError(
            f"{source!r} is not a model folder and could not be fetched from the Hub: "
            f"{str(error).splitlines()[0][:200]}"
        ) from error


def build_tokenizer(cfg: TrainConfig, corpora: dict[str, data.Corpus]) -> StoryTokenizer:
    """Reuse `tokenizer_from`, or train a BPE on up to N stories of each corpus (the original: 50K + 50K)."""
    if cfg.tokenizer_from:
        return StoryTokenizer.load(model_folder(cfg.tokenizer_from))
    texts: list[str] = []
    for corpus in corpora.values():
        cap = cfg.tokenizer_stories_per_corpus
        stories = [data.plain_text(s) for s in corpus.unique_train]
        texts += (
            stories
            if len(stories) <= cap
            else np.random.default_rng(cfg.seed).choice(stories, cap, replace=False).tolist()
        )
    return StoryTokenizer.train(texts, cfg.vocab_size, cfg.min_frequency)


def prepare_rows(
    cfg: TrainConfig,
    corpora: dict[str, data.Corpus],
    tokenizer: StoryTokenizer,
    context_length: int,
    accelerator: Accelerator,
) -> tuple[dict, dict]:
    """Packed (rows, context_length + 1) token arrays per phase and split, plus facts for the card."""
    rows: dict[str, dict[str, np.ndarray]] = {}
    facts: dict[str, dict] = {}
    for phase, corpus in corpora.items():
        # Pretraining packs a stream, so a long document spans rows and nothing is dropped for its
        # length; fine-tuning keeps whole stories within its own bounds.
        low, high = (cfg.finetune_min_tokens, cfg.finetune_max_tokens) if phase == "finetune" else (2, 1 << 62)
        pack = data.pack_whole if phase == "finetune" else data.pack_stream
        phase_facts = dict(corpus.facts)
        rows[phase] = {}
        for split in ("train", "val"):
            started = time.perf_counter()
            with accelerator.main_process_first():  # one process fills the cache, the others read it
                sequences = data.tokenize_stories(getattr(corpus, split), tokenizer, Path(cfg.cache_dir))
            phase_facts[f"{split}_tokenize_seconds"] = round(time.perf_counter() - started, 1)
            # Validation is packed per source, so each source's loss can be reported on its own.
            groups = {"all": sequences} if split == "train" else split_by_source(sequences, corpus.val_counts)
            packed_groups, kept_count, real_tokens = {}, 0, 0
            for label, group in groups.items():
                kept = data.filter_by_length(group, low, high)
                if kept:
                    packed_groups[label] = pack(kept, context_length + 1, tokenizer.pad_id, cfg.seed)
                    kept_count += len(kept)
                    real_tokens += int(sum(len(s) for s in kept))
            if not kept_count:
                raise ValueError(f"no {phase} {split} story is {low}-{high} tokens long; check the data and filters")
            packed = np.concatenate(list(packed_groups.values()))
            phase_facts[f"{split}_kept"] = kept_count
            phase_facts[f"{split}_kept_share"] = round(kept_count / len(sequences), 4)
            phase_facts[f"{split}_tokens"] = real_tokens
            phase_facts[f"{split}_padding_share"] = round(1 - real_tokens / packed.size, 4)
            rows[phase][split] = packed
            if split == "val" and len(packed_groups) > 1:
                bounds = np.cumsum([0] + [len(g) for g in packed_groups.values()])
                rows[phase]["val_groups"] = {
                    label: (int(a), int(b)) for label, a, b in zip(packed_groups, bounds[:-1], bounds[1:])
                }
        accelerator.print(
            f"{phase}: kept {phase_facts['train_kept']:,} of {phase_facts['train_stories']:,} training stories "
            f"({phase_facts['train_kept_share']:.1%}){f' with {low}-{high} tokens' if phase == 'finetune' else ''}; "
            f"{phase_facts['train_tokens']:,} tokens in {len(rows[phase]['train']):,} rows of "
            f"{context_length + 1} tokens ({phase_facts['train_padding_share']:.1%} padding); "
            f"{phase_facts['val_kept']:,} validation stories"
        )
        facts[phase] = phase_facts
    return rows, facts


def split_by_source(sequences: list, counts: dict[str, int]) -> dict[str, list]:
    """The validation sequences cut into their sources' runs (`Corpus.val_counts`, in order)."""
    groups, start = {}, 0
    for label, count in counts.items():
        if count:
            groups[label] = sequences[start : start + count]
            start += count
    return groups


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay weight matrices only: biases, norms and embeddings are left alone."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.dim() >= 2 and "embedding" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(phase: PhaseConfig, total_steps: int):
    """Linear warmup, then cosine decay to a floor of `min_lr_ratio` of the peak."""
    warmup = round(phase.warmup_fraction * total_steps) if phase.warmup_fraction else phase.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return phase.min_lr_ratio + (1 - phase.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def phase_steps(num_rows: int, phase: PhaseConfig, num_processes: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for a phase."""
    per_epoch = num_rows // num_processes // (phase.batch_size * phase.grad_accum)
    if per_epoch < 1:
        raise ValueError(
            f"{num_rows} rows are too few for batch_size {phase.batch_size} x grad_accum "
            f"{phase.grad_accum} x {num_processes} processes: lower the batch size"
        )
    total = per_epoch * phase.epochs
    return per_epoch, min(total, phase.max_steps) if phase.max_steps else total


def epoch_groups(
    num_rows: int, phase: PhaseConfig, seed: int, phase_index: int, epoch: int, accelerator: Accelerator
) -> list[list[np.ndarray]]:
    """This process's micro-batches for one epoch, grouped per optimizer step: a seeded
    permutation, sharded by rank. Deterministic, so a resumed run can skip straight to its place."""
    order = np.random.default_rng([seed, phase_index, epoch]).permutation(num_rows)
    per_process = num_rows // accelerator.num_processes
    mine = order[accelerator.process_index * per_process : (accelerator.process_index + 1) * per_process]
    step_rows = phase.batch_size * phase.grad_accum
    steps = len(mine) // step_rows
    return [
        [
            mine[s * step_rows + m * phase.batch_size : s * step_rows + (m + 1) * phase.batch_size]
            for m in range(phase.grad_accum)
        ]
        for s in range(steps)
    ]


def token_losses(model: torch.nn.Module, batch: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(rows, steps) next-token cross-entropy; 0 where the target is padding."""
    logits = model(batch[:, :-1])
    targets = batch[:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=pad_id, reduction="none"
    ).view(targets.shape)


def lm_loss(model: torch.nn.Module, batch: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy over the real targets: padding positions are ignored."""
    return token_losses(model, batch, pad_id).sum() / (batch[:, 1:] != pad_id).sum().clamp(min=1)


def as_batch(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Packed rows (uint16/uint32 ids) as the int64 tensor the embedding takes."""
    return torch.from_numpy(rows.astype(np.int64)).to(device)


def real_targets(rows: np.ndarray, pad_id: int) -> int:
    return int((rows[:, 1:] != pad_id).sum())


@torch.no_grad()
def evaluate(
    model,
    rows: np.ndarray,
    accelerator: Accelerator,
    pad_id: int,
    batch_size: int,
    groups: dict[str, tuple[int, int]] | None = None,
) -> tuple[float, dict[str, float]]:
    """Token-weighted validation loss over every process's shard, reduced across processes, and
    the same per group of rows (a source's held-out text) when `groups` is given."""
    model.eval()
    labels = list(groups or {})
    group_of_row = np.full(len(rows), len(labels), dtype=np.int64)  # the last slot: rows of no group
    for index, label in enumerate(labels):
        start, end = groups[label]
        group_of_row[start:end] = index
    totals = torch.zeros(len(labels) + 1, 2, device=accelerator.device, dtype=torch.float64)
    indices = np.arange(accelerator.process_index, len(rows), accelerator.num_processes)
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        batch = as_batch(rows[chosen], accelerator.device)
        per_token = token_losses(model, batch, pad_id).double()
        row_group = torch.from_numpy(group_of_row[chosen]).to(accelerator.device)
        totals[:, 0].index_add_(0, row_group, per_token.sum(1))
        totals[:, 1].index_add_(0, row_group, (batch[:, 1:] != pad_id).sum(1).double())
    totals = accelerator.reduce(totals, reduction="sum")
    model.train()
    overall = (totals[:, 0].sum() / totals[:, 1].sum().clamp(min=1)).item()
    by_group = {label: round((totals[i, 0] / totals[i, 1].clamp(min=1)).item(), 4) for i, label in enumerate(labels)}
    return overall, by_group


def bare_model(accelerator: Accelerator, model) -> GPT:
    """The plain GPT inside DDP / torch.compile wrappers: what gets saved, loaded and sampled."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "dropout", None), float):  # SDPA's attention dropout
            module.dropout = p


# ----- checkpoints ------------------------------------------------------------------
def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint: `checkpoint`, or a finished `.tmp` / the `.old` one if a
    kill fell between the two renames of `save_checkpoint`."""
    for name in ("checkpoint", "checkpoint.tmp", "checkpoint.old"):
        if (run_dir / name / "trainer_state.json").is_file():
            return run_dir / name
    return None


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict) -> None:
    """accelerator.save_state into a temp folder, trainer state last, then renames: a kill at any
    moment leaves one complete checkpoint behind."""
    final, tmp, old = run_dir / "checkpoint", run_dir / "checkpoint.tmp", run_dir / "checkpoint.old"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # model, optimizers, schedulers, every process's RNG
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def write_samples(
    accelerator: Accelerator, model, tokenizer: StoryTokenizer, cfg: TrainConfig, phase: str, run_dir: Path
) -> None:
    """A few stories through the shared StoryTeller path (a CPU copy, as the app serves it)."""
    if not accelerator.is_main_process or not cfg.sample_prompts:
        return
    cpu_model = copy.deepcopy(bare_model(accelerator, model)).float().cpu().eval()
    teller = StoryTeller(LoadedModel(cpu_model, tokenizer, ORIGINAL_SAMPLING, run_dir, {}))
    with torch.random.fork_rng(devices=[]):  # leave the training RNG exactly as it was
        lines = [f"## after {phase}"] + [
            f"- {teller.tell(p, seed=cfg.seed + i).story}" for i, p in enumerate(cfg.sample_prompts)
        ]
    with open(run_dir / "samples.txt", "a") as handle:
        handle.write("\n".join(lines) + "\n\n")
    accelerator.print("\n".join(lines))


# ----- the loop ---------------------------------------------------------------------
def train_phase(
    name: str,
    phase: PhaseConfig,
    model,
    optimizer,
    scheduler,
    rows: dict[str, np.ndarray],
    cfg: TrainConfig,
    accelerator: Accelerator,
    run_dir: Path,
    state: dict,
    pad_id: int,
) -> None:
    """Run one phase from wherever `state` says it stands, to its end or an early stop; then keep
    the phase's best weights and checkpoint."""
    per_epoch, total_steps = phase_steps(len(rows["train"]), phase, accelerator.num_processes)
    fresh = {
        "epoch": 0,
        "batch": 0,
        "step": 0,
        "best": None,
        "stale": 0,
        "tokens": 0,
        "train_seconds": 0.0,
        "loss_sum": 0.0,
        "loss_tokens": 0,
        "interval_tokens": 0,
        "interval_seconds": 0.0,
    }
    progress = state["phases"].setdefault(name, fresh)
    if phase.dropout is not None:
        set_dropout(model, phase.dropout)
    accelerator.gradient_accumulation_steps = phase.grad_accum
    accelerator.step = 0  # checkpoints fall on optimizer-step boundaries, so each group starts afresh
    best_path = run_dir / f"best-{name}.safetensors"
    bar = tqdm(total=total_steps, initial=progress["step"], desc=name, disable=not accelerator.is_main_process)
    model.train()
    stop = progress["step"] >= total_steps
    # Train-loss sums stay on the device between evaluations (no sync per step); they are folded
    # into `progress` before a checkpoint so that a resumed run reports the same numbers.
    interval = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    while not stop:
        groups = epoch_groups(len(rows["train"]), phase, cfg.seed, PHASES.index(name), progress["epoch"], accelerator)
        for group in groups[progress["batch"] :]:
            started = time.perf_counter()
            step_tokens = 0
            for indices in group:
                batch_rows = rows["train"][indices]
                count = real_targets(batch_rows, pad_id)
                with accelerator.accumulate(model):
                    loss = lm_loss(model, as_batch(batch_rows, accelerator.device), pad_id)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and phase.grad_clip:
                        accelerator.clip_grad_norm_(model.parameters(), phase.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                interval[0] += loss.detach().double() * count
                interval[1] += count
                step_tokens += count
            scheduler.step()
            seconds = time.perf_counter() - started
            progress["step"] += 1
            progress["batch"] += 1
            progress["train_seconds"] += seconds
            progress["interval_seconds"] += seconds
            # Tokens are counted on this process and scaled: the shards hold near-equal counts.
            progress["tokens"] += step_tokens * accelerator.num_processes
            progress["interval_tokens"] += step_tokens * accelerator.num_processes
            bar.update(1)
            end_of_epoch = progress["batch"] == per_epoch
            done = progress["step"] >= total_steps
            if progress["step"] % phase.eval_every == 0 or end_of_epoch or done:
                fold_interval(progress, interval)
                stop = evaluate_and_log(
                    name,
                    phase,
                    model,
                    rows,
                    cfg,
                    accelerator,
                    run_dir,
                    state,
                    progress,
                    scheduler,
                    pad_id,
                    best_path,
                    bar,
                )
            if end_of_epoch:
                progress["epoch"], progress["batch"] = progress["epoch"] + 1, 0
            stop = stop or done
            if stop:
                break
            if progress["step"] % cfg.checkpoint_every == 0:
                fold_interval(progress, interval)
                save_checkpoint(accelerator, run_dir, state_for_disk(state))
    bar.close()
    accelerator.wait_for_everyone()
    load_model(bare_model(accelerator, model), str(best_path))  # the next phase starts from the best weights
    state["done"].append(name)
    save_checkpoint(accelerator, run_dir, state_for_disk(state))


def fold_interval(progress: dict, interval: torch.Tensor) -> None:
    progress["loss_sum"] += interval[0].item()
    progress["loss_tokens"] += int(interval[1].item())
    interval.zero_()


def evaluate_and_log(
    name, phase, model, rows, cfg, accelerator, run_dir, state, progress, scheduler, pad_id, best_path, bar
) -> bool:
    """Validation loss, a metrics line, the best weights kept; True when patience has run out."""
    val_loss, by_source = evaluate(model, rows["val"], accelerator, pad_id, phase.batch_size, rows.get("val_groups"))
    train_sums = accelerator.reduce(
        torch.tensor([progress["loss_sum"], progress["loss_tokens"]], device=accelerator.device, dtype=torch.float64),
        reduction="sum",
    )
    train_loss = (train_sums[0] / train_sums[1].clamp(min=1)).item()
    record = {
        "phase": name,
        "step": progress["step"],
        "epoch": progress["epoch"],
        "train_loss": round(train_loss, 4),
        "val_loss": round(val_loss, 4),
        "lr": scheduler.get_last_lr()[0],
        "tokens": progress["tokens"],
        "tokens_per_s": round(progress["interval_tokens"] / max(progress["interval_seconds"], 1e-9), 1),
    }
    if by_source:
        record["val_loss_by_source"] = by_source
    progress.update(loss_sum=0.0, loss_tokens=0, interval_tokens=0, interval_seconds=0.0)
    state["metrics"].append(record)
    if accelerator.is_main_process:
        with open(run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
    steps = {phase_name: phase_state["step"] for phase_name, phase_state in state["phases"].items()}
    accelerator.log(trackers.tracker_values(record), step=trackers.run_step(steps, name))
    bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
    if progress["best"] is None or val_loss < progress["best"]:
        progress["best"], progress["stale"] = val_loss, 0
        if accelerator.is_main_process:
            tmp = best_path.with_suffix(".tmp")
            save_model(bare_model(accelerator, model), str(tmp))
            tmp.replace(best_path)
        return False
    progress["stale"] += 1
    if phase.patience and progress["stale"] >= phase.patience:
        accelerator.print(f"{name}: early stop, no improvement in {progress['stale']} evaluations")
        return True
    return False


def state_for_disk(state: dict) -> dict:
    """The trainer state with the wall clock brought up to date."""
    now = time.perf_counter()
    state["wall_seconds"] += now - state["clock"]
    state["clock"] = now
    return {key: value for key, value in state.items() if key != "clock"}


def config_changes(before: dict, after: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ."""
    changed = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key}")
    return changed


# ----- main -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any config field can be overridden: --field value or --field=value; "
        "nested as --pretrain.lr 1e-3; lists as JSON.",
    )
    parser.add_argument("--config", help="a JSON file, e.g. train/configs/cpu.json")
    parser.add_argument("--resume", action="store_true", help="continue the run folder's last checkpoint")
    parser.add_argument("--push-to-hub", dest="push_repo", default="", help="Hub repo id to upload the model to")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        return run(cfg, resume=args.resume, push_repo=args.push_repo or cfg.push_to_hub)
    except (ValueError, FileNotFoundError, ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def run(cfg: TrainConfig, resume: bool = False, push_repo: str = "") -> int:
    """The whole run: setup, phases, export. Returns the process exit code."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    mixed = training_precision(cfg.mixed_precision)
    trackers.require_tracker(cfg.log_with)
    run_dir = cfg.run_dir
    # cpu=True on a machine without CUDA makes a multi-process launch (accelerate launch --multi_gpu,
    # or torchrun) use DDP over gloo; accelerate's own `--cpu` launcher starts one process only.
    accelerator = Accelerator(
        mixed_precision=mixed,
        cpu=not torch.cuda.is_available(),
        log_with=cfg.log_with or None,
        project_dir=str(run_dir),
    )
    if not accelerator.is_main_process:
        datasets.disable_progress_bars()
    checkpoint = find_checkpoint(run_dir)
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir}")
    if not resume and checkpoint is not None:
        raise ValueError(
            f"{run_dir} already holds a run: add --resume to continue it, or pick another "
            f"--name / --out_dir (or delete the folder)"
        )
    saved_config = run_dir / "train_config.json"
    if resume and saved_config.is_file():
        changed = config_changes(json.loads(saved_config.read_text()), cfg.to_dict())
        if changed:  # allowed (say, more epochs), but a changed data mix or batch size will not replay exactly
            accelerator.print(f"note: resuming with a config that differs from the run's: {', '.join(changed)}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # leftovers of a run that died before its first checkpoint
            for stale in ("metrics.jsonl", "samples.txt", "tokenizer.json"):
                (run_dir / stale).unlink(missing_ok=True)
            shutil.rmtree(run_dir / trackers.PROJECT, ignore_errors=True)  # TensorBoard's event files
        cfg.save(run_dir / "train_config.json")
    accelerator.init_trackers(
        trackers.PROJECT, config=trackers.flat_config(cfg.to_dict()), init_kwargs=trackers.init_kwargs(cfg.name)
    )
    set_seed(cfg.seed)

    # Data: every process reads it, so a bad source fails everywhere at once (never a hang).
    phases = [p for p in PHASES if not getattr(cfg, f"skip_{p}")]
    if not phases:
        raise ValueError("both phases are skipped: nothing to do")
    if cfg.init_from and not cfg.tokenizer_from:
        cfg.tokenizer_from = cfg.init_from  # a model keeps the tokenizer it was trained with
    corpora = {}
    for phase in phases:
        sources = getattr(cfg, f"{phase}_sources")
        if not sources:
            raise ValueError(f"no {phase}_sources given (or set --skip_{phase} true)")
        corpora[phase] = data.build_corpus(sources, cfg.val_fraction, cfg.seed)

    # Tokenizer: the main process trains (or copies) it into the run folder; the others read it.
    tokenizer_path = run_dir / "tokenizer.json"
    if accelerator.is_main_process and not tokenizer_path.is_file():
        build_tokenizer(cfg, corpora).save(tokenizer_path)
    accelerator.wait_for_everyone()
    tokenizer = StoryTokenizer.load(tokenizer_path)

    if cfg.init_from:
        model = load_model_folder(model_folder(cfg.init_from)).model
        if model.config.vocab_size < tokenizer.vocab_size:
            raise ValueError(f"init_from {cfg.init_from} has fewer token embeddings than the tokenizer has tokens")
    else:
        model = GPT(model_preset(cfg.model_preset, vocab_size=tokenizer.vocab_size, **cfg.model_overrides))
    model.train()
    rows, facts = prepare_rows(cfg, corpora, tokenizer, model.config.context_length, accelerator)
    accelerator.print(
        f"model: {model.num_parameters():,} parameters ({cfg.model_preset if not cfg.init_from else cfg.init_from}); "
        f"device {accelerator.device}, {accelerator.num_processes} process(es), mixed precision {mixed}"
    )

    # One optimizer and scheduler per phase, all prepared up front so that save_state and
    # load_state always see the same objects, whichever phase a checkpoint is in.
    phase_cfgs = {p: getattr(cfg, p) for p in PHASES}
    optimizers, schedulers = [], []
    for name in PHASES:
        phase = phase_cfgs[name]
        # fused: one kernel for the whole update instead of a dozen ops per parameter (CPU and CUDA)
        optimizer = torch.optim.AdamW(
            param_groups(model, phase.weight_decay), lr=phase.lr, betas=(0.9, 0.95), fused=True
        )
        total = phase_steps(len(rows[name]["train"]), phase, accelerator.num_processes)[1] if name in rows else 1
        optimizers.append(optimizer)
        schedulers.append(torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(phase, total)))
    if cfg.compile:
        model = torch.compile(model)
    model, *optimizers = accelerator.prepare(model, *optimizers)
    for scheduler in schedulers:
        accelerator.register_for_checkpointing(scheduler)

    state: dict = {"phases": {}, "done": [], "metrics": [], "facts": facts, "wall_seconds": 0.0}
    if resume:
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if accelerator.is_main_process:  # metrics after the checkpoint will be measured again
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in state["metrics"]))
        accelerator.print(
            f"resumed from {checkpoint}: "
            + ", ".join(f"{p} step {s['step']} (epoch {s['epoch']})" for p, s in state["phases"].items())
        )
    state["clock"] = time.perf_counter()

    for name in phases:
        if name in state["done"]:  # the checkpoint's weights already are this phase's best
            continue
        index = PHASES.index(name)
        train_phase(
            name,
            phase_cfgs[name],
            model,
            optimizers[index],
            schedulers[index],
            rows[name],
            cfg,
            accelerator,
            run_dir,
            state,
            tokenizer.pad_id,
        )
        write_samples(accelerator, model, tokenizer, cfg, name, run_dir)

    final_state = state_for_disk(state)
    if accelerator.is_main_process:
        folder = export_run(cfg, bare_model(accelerator, model), tokenizer, final_state, run_dir)
        accelerator.print(summary(cfg, final_state, folder))
        if push_repo:
            from horror.hub import push_model_folder

            try:
                push_model_folder(folder, push_repo)
            except Exception as error:  # no token, no network, no rights: the run itself is fine
                print(
                    f"error: could not push to the Hub repo {push_repo}: {str(error).splitlines()[0][:200]}",
                    file=sys.stderr,
                )
                return 1
            accelerator.print(f"pushed the model to https://huggingface.co/{push_repo}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
