"""StoryTeller: the one wrapper the app, the CLI, the benchmarks and the trainer use.

It resolves where the model comes from (Hub / folder / bundled, with fallback), cleans and
bounds user text, and runs the shared `generate`/`stream`/`score` path under a lock so
concurrent requests are safe.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from horror import generation
from horror.config import MAX_BATCH_SIZE, GenerationConfig, ModelConfig
from horror.inference import describe_engine, prepare_for_inference
from horror.hub import BUNDLED_MODEL_DIR, ModelSource, resolve_model_source
from horror.model_folder import LoadedModel, ModelLoadError, load_model_folder

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 1000  # a first sentence, or one chain turn
MAX_SCORE_CHARS = 20_000
STORY_SENTENCES = 2  # a two-sentence horror story: the setup, then the twist
PROMPTS_FILE = BUNDLED_MODEL_DIR.parent / "prompts.txt"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc


class GenerationError(RuntimeError):
    """The model could not produce what was asked (e.g. no sentence after several tries)."""


def clean_text(text: Any, what: str = "prompt", limit: int = MAX_PROMPT_CHARS) -> str:
    """User text made safe for the model: control characters and lone surrogates removed,
    whitespace collapsed. Raises ValueError for non-text or text over `limit` characters."""
    if text is None:
        return ""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be text, got {type(text).__name__}")
    if len(text) > limit:
        raise ValueError(f"{what} is {len(text):,} characters long; the limit is {limit:,}")
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> '?'
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class Story:
    prompt: str
    story: str
    continuation: str
    confidence: float
    new_tokens: int
    seconds: float
    seed: int | None
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Score:
    tokens: int
    bytes: int
    nll_per_token: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token) if self.tokens else float("nan")

    @property
    def confidence(self) -> float:
        """exp(mean log-probability): the same scale as a generated story's confidence."""
        return math.exp(-self.nll_per_token) if self.tokens else 0.0

    @property
    def bits_per_byte(self) -> float:
        return self.nll_per_token * self.tokens / math.log(2) / self.bytes if self.bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "bytes": self.bytes,
            "nll_per_token": self.nll_per_token,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "confidence": self.confidence,
        }


class StoryTeller:
    """A loaded model plus everything needed to tell stories with it."""

    def __init__(self, loaded: LoadedModel, source: ModelSource | None = None, quantize: bool | None = None):
        self.model = loaded.model  # fp32: scoring reports exact likelihoods
        # What sampling runs on: int8 on CPU (in the C decoder where it builds) unless
        # quantize=False or $HORROR_QUANTIZE=0; $HORROR_NATIVE=0 keeps int8 in PyTorch.
        self.sampling_model = prepare_for_inference(loaded.model, quantize, str(loaded.model.lm_head.weight.device))
        self.tokenizer = loaded.tokenizer
        self.generation_config = loaded.generation_config
        self.card_metadata = loaded.card_metadata
        self.source = source or ModelSource(str(loaded.path), loaded.path, "folder")
        self._lock = threading.Lock()
        self._curated_prompts: list[str] | None = None

    # ----- loading -------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        revision: str | None = None,
        device: str = "cpu",
        fallback: bool = True,
        quantize: bool | None = None,
    ) -> "StoryTeller":
        """Load from a Hub repo id, a folder, $HORROR_MODEL or the bundled model.

        With `fallback`, a model that cannot be fetched or loaded is replaced by the bundled one
        and `notice` says why; without it the error is raised.
        """
        resolved = resolve_model_source(str(source) if source is not None else None, revision)
        if resolved.notice and not fallback:
            raise ModelLoadError(resolved.notice)
        try:
            return cls(load_model_folder(resolved.path, device), resolved, quantize)
        except ModelLoadError as error:
            if not fallback or resolved.kind == "bundled":
                raise
            notice = f"could not load {resolved.requested!r}: {error}; serving the bundled model instead"
            logger.warning(notice)
            bundled = ModelSource(resolved.requested, BUNDLED_MODEL_DIR, "bundled", None, notice)
            return cls(load_model_folder(BUNDLED_MODEL_DIR, device), bundled, quantize)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def notice(self) -> str | None:
        """Why the model being served is not the one asked for (None when it is)."""
        return self.source.notice

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters()

    @property
    def is_trained(self) -> bool:
        return not self.card_metadata.get("untrained", False)

    def info(self) -> dict[str, Any]:
        """Facts for `horror info` and the app's About tab."""
        return {
            "source": self.source.requested,
            "source_kind": self.source.kind,
            "path": str(self.source.path),
            "revision": self.source.revision,
            "notice": self.notice,
            "trained": self.is_trained,
            "parameters": self.num_parameters,
            "inference": describe_engine(self.sampling_model),
            **self.model.config.to_dict(),
            "tokenizer_vocab_size": self.tokenizer.vocab_size,
            "generation_config": self.generation_config.to_dict(),
            "card": self.card_metadata,
        }

    # ----- settings and prompts --------------------------------------------------------
    def settings(self, base: GenerationConfig | None = None, **overrides: Any) -> GenerationConfig:
        """The model's default settings (or `base`) with validated overrides."""
        return (base or self.generation_config).replace(**overrides)

    def _prompt_ids(self, prompt: str, start_id: int | None = None) -> list[int]:
        """<BOS> (or another start token, e.g. <CHAIN>) and the prompt's ids."""
        start = self.tokenizer.bos_id if start_id is None else start_id
        return [start, *self.tokenizer.encode(prompt)] if prompt else [start]

    def _story(self, prompt: str, result: generation.Generation, seconds: float) -> Story:
        # A story is one line of plain text: control bytes the model wrote become spaces.
        text = _CONTROL_CHARACTERS.sub(" ", result.text)
        continuation = text.strip() if not prompt else text.rstrip()
        story = f"{prompt}{continuation}" if continuation[:1].isspace() or not prompt else f"{prompt} {continuation}"
        return Story(
            prompt=prompt,
            story=re.sub(r"\s+", " ", story).strip(),
            continuation=re.sub(r"\s+", " ", continuation).strip(),
            confidence=result.confidence,
            new_tokens=len(result.token_ids),
            seconds=seconds,
            seed=result.seed,
            finish_reason=result.finish_reason,
        )

    # ----- telling -----------------------------------------------------------------
    def story_settings(self, prompt: str, settings: GenerationConfig | None = None,
                       **overrides: Any) -> GenerationConfig:
        """Settings for a story: unless told otherwise, stop once the story has two sentences
        (one more after a one-sentence prompt, two after an empty one)."""
        settings = self.settings(settings, **overrides)
        if settings.stop_after_sentences is None:
            written = len(generation.sentence_ends(prompt + " ")) if prompt else 0
            settings = settings.replace(stop_after_sentences=max(1, STORY_SENTENCES - written))
        return settings

    def tell_many(self, prompt: str | None = "", n: int = 1, settings: GenerationConfig | None = None,
                  **overrides: Any) -> list[Story]:
        """`n` stories continuing `prompt` (empty: the model writes its own first sentence)."""
        prompt = clean_text(prompt)
        settings = self.story_settings(prompt, settings, **overrides)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BATCH_SIZE:
            raise ValueError(f"n must be a whole number between 1 and {MAX_BATCH_SIZE}, got {n!r}")
        started = time.perf_counter()
        with self._lock:
            results = generation.generate(self.sampling_model, self.tokenizer, self._prompt_ids(prompt), settings, n)
        seconds = (time.perf_counter() - started) / n
        return [self._story(prompt, result, seconds) for result in results]

    def tell(self, prompt: str | None = "", settings: GenerationConfig | None = None, **overrides: Any) -> Story:
        """One story continuing `prompt`."""
        return self.tell_many(prompt, 1, settings, **overrides)[0]

    def best_of(self, prompt: str | None = "", n: int = 4, settings: GenerationConfig | None = None,
                **overrides: Any) -> list[Story]:
        """Sample `n` stories and return them ranked by confidence, best first."""
        stories = self.tell_many(prompt, n, settings, **overrides)
        return sorted(stories, key=lambda story: story.confidence, reverse=True)

    def stream(self, prompt: str | None = "", settings: GenerationConfig | None = None,
               **overrides: Any) -> Iterator[str | Story]:
        """Yield the story text so far as it grows, then the finished Story.

        The lock is held one token at a time, so concurrent streams interleave fairly."""
        prompt = clean_text(prompt)
        settings = self.story_settings(prompt, settings, **overrides)
        if settings.seed is None:
            settings = settings.replace(seed=random.SystemRandom().randrange(2**48))
        started = time.perf_counter()
        steps = generation.stream(self.sampling_model, self.tokenizer, self._prompt_ids(prompt), settings)
        text = ""
        while True:
            # Gradio may resume a streaming handler on any worker thread; each step takes the lock
            # (and enters inference mode itself, in generation).
            with self._lock:
                item = next(steps, None)
            if item is None:
                return
            if isinstance(item, generation.Generation):
                yield self._story(prompt, item, time.perf_counter() - started)
                return
            text += item
            yield self._story(prompt, generation.Generation([], text, "length"), 0.0).story

    # ----- story chain ---------------------------------------------------------------
    def continue_chain(self, sentences: list[str], settings: GenerationConfig | None = None,
                       attempts: int = 3, **overrides: Any) -> Story:
        """The model's next sentence after `sentences` (empty: it opens the chain).

        Only the most recent sentences that fit the model's window are shown to it."""
        if not isinstance(sentences, (list, tuple)):
            raise ValueError("sentences must be a list of strings")
        # Check every sentence but clean only those in the window, so a huge chain stays cheap.
        for sentence in sentences:
            if not isinstance(sentence, str) or len(sentence) > MAX_PROMPT_CHARS:
                clean_text(sentence, "sentence")  # raises the usual message; None is an empty sentence
        settings = self.settings(settings, **overrides).replace(stop_after_sentences=1)
        # A model trained on chains starts them with <CHAIN> and knows the story goes on, so it may
        # end the story itself; one without it is kept writing past <EOS> (its artefacts: "now.,").
        chain_id = self.tokenizer.chain_id
        budget = self.config.context_length - settings.max_new_tokens - 1
        window: list[str] = []
        used = 0
        for sentence in reversed(sentences):
            sentence = clean_text(sentence, "sentence")
            if not sentence:
                continue
            cost = len(self.tokenizer.encode(" " + sentence))
            if window and used + cost > budget:
                break
            window.insert(0, sentence)
            used += cost
        prompt = " ".join(window)
        prompt_ids = self._prompt_ids(prompt, chain_id)[-max(budget, 1):]
        for attempt in range(attempts):
            seed_settings = settings if attempt == 0 else settings.replace(seed=(settings.seed or 0) + attempt)
            # The last try bans <EOS>: a chain must get its sentence even where the model would end.
            seed_settings = seed_settings.replace(allow_eos=chain_id is not None and attempt < attempts - 1)
            started = time.perf_counter()
            with self._lock:
                result = generation.generate(self.sampling_model, self.tokenizer, prompt_ids, seed_settings)[0]
            story = self._story(prompt, result, time.perf_counter() - started)
            if story.continuation and (result.finish_reason != "eos"
                                       or generation.ends_with_sentence(story.continuation)):
                return story
        raise GenerationError("the model wrote no sentence; try again or change the settings")

    # ----- scoring -------------------------------------------------------------------
    def score(self, text: str, prompt: str | None = None) -> Score:
        """How likely the model finds `text` (after `prompt`, if given; else as a whole story)."""
        text = clean_text(text, "text", MAX_SCORE_CHARS)
        if not text:
            raise ValueError("text to score is empty")
        prompt = clean_text(prompt)
        if prompt:
            prompt_ids, target_ids = self._prompt_ids(prompt), self.tokenizer.encode(" " + text)
        else:
            prompt_ids, target_ids = [self.tokenizer.bos_id], [*self.tokenizer.encode(text), self.tokenizer.eos_id]
        with self._lock:
            log_probs = generation.score_continuation(self.model, prompt_ids, target_ids)
        return Score(len(log_probs), len(text.encode("utf-8")), -sum(log_probs) / len(log_probs))

    # ----- random prompts ------------------------------------------------------------
    def curated_prompts(self) -> list[str]:
        if self._curated_prompts is None:
            lines = PROMPTS_FILE.read_text().splitlines() if PROMPTS_FILE.is_file() else []
            self._curated_prompts = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return self._curated_prompts

    def random_prompt(self, seed: int | None = None, model_written: bool = False) -> str:
        """A first sentence: from the curated list, or written by the model itself."""
        rng = random.Random(seed)
        prompts = self.curated_prompts()
        if model_written or not prompts:
            settings = self.settings(stop_after_sentences=1, seed=rng.randrange(2**48), temperature=0.8)
            return self.tell("", settings).story
        return rng.choice(prompts)


def set_cpu_threads() -> None:
    """Use every core but no more (oversubscription slows small matmuls down a lot)."""
    import os

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
