"""Logits processors: pure functions from (logits, context) to logits, then one sampler.

Each works on a batch: logits (B, V) float, context token ids (B, T) long. Disallowed
tokens get -inf. Applied in the order `process_logits` lists them.
"""

from __future__ import annotations

import torch

from horror.config import GenerationConfig


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """The CTRL/original-project rule: for tokens already in the context, divide positive
    logits by `penalty` and multiply negative ones by it (so both move towards "less likely")."""
    if penalty == 1.0 or context.numel() == 0:
        return logits
    seen = torch.gather(logits, 1, context)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def apply_no_repeat_ngram(logits: torch.Tensor, context: torch.Tensor, size: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in the context."""
    steps = context.shape[1]
    if size <= 0 or steps < size:
        return logits
    logits = logits.clone()
    prefix_len = size - 1
    for row, tokens in enumerate(context.tolist()):
        current = tuple(tokens[steps - prefix_len :]) if prefix_len else ()
        banned = {
            tokens[i + prefix_len] for i in range(steps - size + 1) if tuple(tokens[i : i + prefix_len]) == current
        }
        if banned:
            logits[row, list(banned)] = float("-inf")
    return logits


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits per row."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_best = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_best, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already reach p (the best token is always kept).
    drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= p
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least min_p times the best token's."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = probs.max(dim=-1, keepdim=True).values * min_p
    return logits.masked_fill(probs < threshold, float("-inf"))


def apply_penalties(
    logits: torch.Tensor, context: torch.Tensor, settings: GenerationConfig, eos_id: int | None = None
) -> torch.Tensor:
    """The processors that look at the context: repetition penalty, <EOS> ban, n-gram block.

    Never changes `logits` itself (the caller still needs the raw ones)."""
    penalised = apply_repetition_penalty(logits.float(), context, settings.repetition_penalty)
    if not settings.allow_eos and eos_id is not None:
        if penalised is logits:  # no processor has copied it yet
            penalised = penalised.clone()
        penalised[:, eos_id] = float("-inf")  # after the penalty, which keeps -inf at -inf anyway
    return apply_no_repeat_ngram(penalised, context, settings.no_repeat_ngram_size)


def process_logits(
    logits: torch.Tensor, context: torch.Tensor, settings: GenerationConfig, eos_id: int | None = None
) -> torch.Tensor:
    """All processors in order: penalties on raw logits, then temperature, then truncation.

    `eos_id` is banned when the settings say `allow_eos=False`."""
    return _temperature_and_truncation(apply_penalties(logits, context, settings, eos_id), settings)


def _temperature_and_truncation(logits: torch.Tensor, settings: GenerationConfig) -> torch.Tensor:
    if settings.temperature > 0:
        logits = logits / settings.temperature
    truncated = apply_min_p(apply_top_p(apply_top_k(logits, settings.top_k), settings.top_p), settings.min_p)
    return _never_empty(truncated, logits)


def _never_empty(truncated: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    # If the n-gram ban left a row nothing to choose, let it choose freely rather than crash.
    empty = torch.isneginf(truncated).all(dim=-1, keepdim=True)
    if empty.any():
        truncated = torch.where(empty, torch.nan_to_num(logits, neginf=0.0), truncated)
    return truncated


def choose_next(
    logits: torch.Tensor,
    context: torch.Tensor,
    settings: GenerationConfig,
    generator: torch.Generator | None,
    eos_id: int | None = None,
) -> torch.Tensor:
    """The next token id per row (B,) under all the settings: the same draw as
    `sample_next(process_logits(...))`, with less work per token."""
    penalised = apply_penalties(logits, context, settings, eos_id)
    if settings.temperature == 0:
        return penalised.argmax(dim=-1)
    if 0 < settings.top_k < penalised.shape[-1]:
        values, indices = torch.topk(penalised, settings.top_k, dim=-1)  # sorted, best first
        if not torch.isneginf(values[:, 0]).any():  # every row has a token left to choose
            choice = sample_next(_truncate_sorted(values, settings), settings.temperature, generator)
            return indices.gather(1, choice[:, None]).squeeze(1)
    return sample_next(_temperature_and_truncation(penalised, settings), settings.temperature, generator)


def choose_next_and_log_probs(
    logits: torch.Tensor,
    context: torch.Tensor,
    settings: GenerationConfig,
    generator: torch.Generator | None,
    eos_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token id per row (B,), as `choose_next`, and its log-probability under the raw
    `logits` (what a story's confidence is made of): the PyTorch engine's sampler."""
    next_ids = choose_next(logits, context, settings, generator, eos_id)
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, next_ids[:, None]).squeeze(1)
    return next_ids, log_probs


def _truncate_sorted(values: torch.Tensor, settings: GenerationConfig) -> torch.Tensor:
    """Temperature, top-p and min-p over the top-k candidates only (sorting 17K logits per token
    costs more than the rest of sampling); `values` are sorted best first, so top-p needs no sort."""
    values = values / settings.temperature
    if settings.top_p < 1.0:
        probs = values.softmax(dim=-1)
        # Drop a token when the tokens before it already reach p (the best token is always kept).
        values = values.masked_fill(probs.cumsum(dim=-1) - probs >= settings.top_p, float("-inf"))
    return apply_min_p(values, settings.min_p)


def sample_next(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row (B,): argmax when temperature is 0, else a draw from softmax."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    # The exponential race: argmax(p / E) with E ~ Exp(1) picks token i with probability p_i. It is
    # how torch.multinomial draws one sample (the same draws), minus its input checks, which cost
    # as much as the rest of sampling.
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)
