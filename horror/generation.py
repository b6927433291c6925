"""The one generation path: sample tokens with a KV cache, stop by rule, stream text, score.

Everything that writes (app, CLI, benchmarks, evaluation, the trainer's samples) calls
`generate` or `stream` here; `score_continuation` measures how likely a text is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from horror.config import MAX_BATCH_SIZE, GenerationConfig
from horror.engine import Engine, TorchEngine
from horror.healing import NO_BOUNDARY, Boundary, boundary_mask
from horror.model import GPT, KVCache
from horror.sampling import choose_next_and_log_probs
from horror.text import ends_with_sentence, sentence_ends
from horror.tokenizer import StoryTokenizer

FINISH_SENTENCE_TOKENS = 16  # past max_new_tokens, to end a cut-off sentence rather than show half of it


@dataclass
class Generation:
    """One sample: the new tokens, their text, why it stopped and how likely the model found it."""

    token_ids: list[int]
    text: str
    finish_reason: str  # "eos", "length" or "sentences"
    token_log_probs: list[float] = field(default_factory=list)
    seed: int | None = None

    @property
    def confidence(self) -> float:
        """exp(mean log-probability) of the new tokens under the model: 1.0 = fully expected."""
        if not self.token_log_probs:
            return 0.0
        return math.exp(sum(self.token_log_probs) / len(self.token_log_probs))


class _RowState:
    """Stopping bookkeeping for one batch row."""

    def __init__(self, boundary: Boundary) -> None:
        self.token_ids: list[int] = []
        self.log_probs: list[float] = []
        self.finish_reason: str | None = None
        self.cut_text: str | None = None  # text truncated at a sentence boundary
        self.boundary = boundary
        self.past_boundary = not boundary.active

    def written(self, tokenizer: StoryTokenizer) -> str:
        """Everything the row's tokens spell, the healed prompt text included."""
        return tokenizer.decode(self.token_ids)

    def text(self, tokenizer: StoryTokenizer) -> str:
        """The new text after the prompt (the healed part is the prompt's own)."""
        return self.written(tokenizer)[len(self.boundary.healed) :]


def _check_prompt(prompt_ids: list[int], vocab_size: int) -> None:
    if not prompt_ids:
        raise ValueError("the prompt must hold at least one token (start from <BOS>)")
    if min(prompt_ids) < 0 or max(prompt_ids) >= vocab_size:
        raise ValueError(f"prompt token ids must be in [0, {vocab_size}), got {min(prompt_ids)}..{max(prompt_ids)}")


def new_seed() -> int:
    """A fresh random seed (48 bits: below MAX_SEED, and easy to copy from the page)."""
    return int.from_bytes(os.urandom(6), "little")


def with_seed(settings: GenerationConfig) -> GenerationConfig:
    """`settings` with a seed: its own, else a fresh one (so every story can be told again)."""
    return settings if settings.seed is not None else settings.replace(seed=new_seed())


def _engine(model: Engine | GPT) -> Engine:
    # A bare GPT (training samples, tests) draws with the PyTorch sampler.
    return TorchEngine(model, choose_next_and_log_probs) if isinstance(model, GPT) else model


def generate_steps(
    model: Engine | GPT,
    tokenizer: StoryTokenizer,
    prompt_ids: list[int],
    settings: GenerationConfig,
    num_samples: int = 1,
    *,
    use_cache: bool = True,
    boundary: Boundary = NO_BOUNDARY,
) -> Iterator[tuple[torch.Tensor, list[_RowState]]]:
    """Yield (new token per row, row states) after each step until every row has stopped.

    The new text starts by keeping to `boundary` (see horror.healing). A story or chain sentence
    (`stop_after_sentences`) cut at `max_new_tokens` may take up to FINISH_SENTENCE_TOKENS more
    to end its sentence. The caller reads the final row states for the results; `generate` and
    `stream` wrap this.
    """
    engine = _engine(model)
    _check_prompt(prompt_ids, engine.config.vocab_size)
    if not 1 <= num_samples <= MAX_BATCH_SIZE:
        raise ValueError(f"num_samples must be between 1 and {MAX_BATCH_SIZE}, got {num_samples}")
    context_length = engine.config.context_length
    # Keep the prompt's most recent tokens so prompt + new tokens fit the window.
    keep = max(context_length - settings.max_new_tokens, context_length // 2)
    prompt_ids = prompt_ids[-keep:]
    generator = torch.Generator().manual_seed(with_seed(settings).seed)
    rows = [_RowState(boundary) for _ in range(num_samples)]
    masks = boundary_mask(tokenizer, engine.config.vocab_size) if boundary.active else None
    extra = FINISH_SENTENCE_TOKENS if settings.stop_after_sentences else 0
    tokens = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=engine.device)
    cache: KVCache | None = None
    pending = tokens  # what the model has not seen yet

    for step in range(settings.max_new_tokens + extra):
        if step >= settings.max_new_tokens:  # past the limit only to end a sentence
            for row in rows:
                text = row.text(tokenizer)
                if not row.finish_reason and (ends_with_sentence(text) or not text.strip()):
                    row.finish_reason = "length"  # a whole sentence (or nothing begun): nothing to finish
            if all(row.finish_reason for row in rows):
                return
        # Inference mode is per thread and would stay on in the caller's thread while this
        # generator waits at `yield` (breaking its training, say), so enter it for each step only.
        with torch.inference_mode():
            if use_cache:
                if cache is None or cache.length + pending.shape[1] > context_length:
                    # (Re)fill a fresh cache from the most recent half window when it is full.
                    pending = tokens[:, -keep:] if cache is None else tokens[:, -(context_length // 2) :]
                    cache = engine.new_cache(num_samples)
                logits = engine.forward(pending, cache, last_only=True)[:, -1, :]
            else:
                logits = engine.forward(tokens[:, -context_length:], last_only=True)[:, -1, :]
            if masks is not None:
                logits = _keep_to_boundary(logits.float(), rows, masks, tokenizer)
            next_ids, log_probs = engine.choose_next(
                logits.float(), tokens[:, -context_length:], settings, generator, tokenizer.eos_id
            )
            _update_rows(rows, next_ids.tolist(), log_probs.tolist(), tokenizer, settings)
            tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
            pending = next_ids[:, None]
        yield next_ids, rows
        if all(row.finish_reason for row in rows):
            return
    for row in rows:
        row.finish_reason = row.finish_reason or "length"


def _keep_to_boundary(logits: torch.Tensor, rows: list[_RowState], masks, tokenizer: StoryTokenizer) -> torch.Tensor:
    """`logits` with the tokens that would break a row's boundary banned (rows past it untouched)."""
    allowed_by_text: dict[str, torch.Tensor] = {}  # rows at the same place share a mask
    for index, row in enumerate(rows):
        if row.finish_reason or row.past_boundary:
            continue
        written = row.written(tokenizer)
        if row.boundary.settled(written):
            row.past_boundary = True  # once past it, a row never needs decoding here again
            continue
        if written not in allowed_by_text:
            allowed_by_text[written] = masks.allowed(row.boundary, written)
        allowed = allowed_by_text[written].to(logits.device)
        if allowed.any():
            logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
    return logits


def _update_rows(
    rows: list[_RowState],
    next_ids: list[int],
    log_probs: list[float],
    tokenizer: StoryTokenizer,
    settings: GenerationConfig,
) -> None:
    for row, token_id, log_prob in zip(rows, next_ids, log_probs):
        if row.finish_reason:
            continue
        if token_id == tokenizer.eos_id:
            row.finish_reason = "eos"
            continue
        row.token_ids.append(token_id)
        row.log_probs.append(log_prob)
        if settings.stop_after_sentences:
            text = row.text(tokenizer)
            ends = sentence_ends(text)
            if len(ends) >= settings.stop_after_sentences:
                row.cut_text = text[: ends[settings.stop_after_sentences - 1]]
                row.finish_reason = "sentences"


def _finish(row: _RowState, tokenizer: StoryTokenizer, seed: int) -> Generation:
    token_ids, log_probs = row.token_ids, row.log_probs
    if row.cut_text is not None:
        # Drop the look-ahead token(s) that only proved the sentence was over.
        healed = len(row.boundary.healed)
        while token_ids and len(tokenizer.decode(token_ids[:-1])) - healed >= len(row.cut_text):
            token_ids, log_probs = token_ids[:-1], log_probs[:-1]
        text = row.cut_text
    else:
        # A length stop can cut a multi-byte character in half; drop the stub, as `stream` does.
        text = row.text(tokenizer).rstrip("\ufffd")
    return Generation(token_ids, text, row.finish_reason or "length", log_probs, seed)


def generate(
    model: Engine | GPT,
    tokenizer: StoryTokenizer,
    prompt_ids: list[int],
    settings: GenerationConfig,
    num_samples: int = 1,
    *,  # keyword-only: two flags in a row are too easy to pass in the wrong order
    boundary: Boundary = NO_BOUNDARY,
    use_cache: bool = True,
) -> list[Generation]:
    """Sample `num_samples` continuations of `prompt_ids` (one batch) and return them."""
    settings = with_seed(settings)
    # Run to the end: the last step's row states hold the results.
    *_, (_, rows) = generate_steps(
        model, tokenizer, prompt_ids, settings, num_samples, use_cache=use_cache, boundary=boundary
    )
    return [_finish(row, tokenizer, settings.seed) for row in rows]


def stream(
    model: Engine | GPT,
    tokenizer: StoryTokenizer,
    prompt_ids: list[int],
    settings: GenerationConfig,
    *,
    boundary: Boundary = NO_BOUNDARY,
) -> Iterator[str | Generation]:
    """Yield the continuation's text as it grows (always whole characters), then the Generation."""
    settings = with_seed(settings)
    rows: list[_RowState] = []
    shown = ""
    for _, rows in generate_steps(model, tokenizer, prompt_ids, settings, 1, boundary=boundary):
        row = rows[0]
        text = row.cut_text if row.cut_text is not None else row.text(tokenizer)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            continue
        if len(text) > len(shown) and text.startswith(shown):
            yield text[len(shown) :]
            shown = text
    yield _finish(rows[0], tokenizer, settings.seed)


def score_continuation(model: GPT, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]:
    """Log-probability of each continuation token given the prompt and the tokens before it.

    Texts longer than the window are scored in overlapping windows so every token has context.
    """
    _check_prompt(prompt_ids, model.config.vocab_size)
    if not continuation_ids:
        return []
    ids = prompt_ids + continuation_ids
    context_length = model.config.context_length
    stride = context_length // 2
    device = model.token_embedding.weight.device
    log_probs: list[float] = []
    position = len(prompt_ids)  # the next token to score
    with torch.inference_mode():
        while position < len(ids):
            # Past the first window, keep `stride` tokens of context before the first scored token.
            start = max(0, position - stride) if position >= context_length else 0
            end = min(start + context_length, len(ids))
            logits = model(torch.tensor([ids[start:end]], device=device))[0].float()
            window_log_probs = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(ids[position:end], device=device)
            rows = torch.arange(position - start - 1, end - start - 1, device=device)
            log_probs.extend(window_log_probs[rows, targets].tolist())
            position = end
    return log_probs
