"""StoryTeller: the one wrapper the app, the CLI, the benchmarks and the trainer use.

It resolves where the model comes from (Hub / folder / bundled, with fallback), cleans and
bounds user text (here, once: callers pass what the person typed), and runs the shared
`generate`/`stream`/`score` path under a lock so concurrent requests are safe.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from horror import generation
from horror.chain import window_start
from horror.config import MAX_BATCH_SIZE, GenerationConfig, ModelConfig
from horror.errors import GenerationError, UserError
from horror.healing import Boundary, heal
from horror.hub import BUNDLED_MODEL_DIR, ModelSource, resolve_model_source
from horror.inference import describe_engine, prepare_for_inference
from horror.model_folder import LoadedModel, ModelLoadError, load_model_folder
from horror.text import MAX_PROMPT_CHARS, clean_text, count_sentences, ends_with_sentence, one_line

logger = logging.getLogger(__name__)

MAX_SCORE_CHARS = 20_000
STORY_SENTENCES = 2  # a two-sentence horror story: the setup, then the twist
PROMPTS_FILE = BUNDLED_MODEL_DIR.parent / "prompts.txt"


@dataclass
class Story:
    prompt: str
    story: str
    continuation: str
    confidence: float
    new_tokens: int
    seconds: float
    seed: int | None
    finish_reason: str | None  # "eos", "length" or "sentences"; None while it is still being written

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
        self.engine = prepare_for_inference(loaded.model, quantize, str(loaded.model.lm_head.weight.device))
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
    ) -> StoryTeller:
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
            "inference": describe_engine(self.engine),
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

    def _healed_prompt(self, prompt: str, start_id: int | None = None) -> tuple[list[int], Boundary]:
        """The ids to generate from and the boundary the story must keep to (horror.healing)."""
        return heal(self.tokenizer, self._prompt_ids(prompt, start_id), prompt)

    def _story(self, prompt: str, result: generation.Generation, seconds: float, draft: bool = False) -> Story:
        # The new text follows the prompt exactly (healing settled the boundary); a story is one
        # line of plain text, and one cut off mid-sentence ends visibly.
        text = result.text.rstrip()
        if not draft and result.finish_reason == "length" and text.strip() and not ends_with_sentence(text):
            text += "\u2026"
        story = prompt + text
        return Story(
            prompt=prompt,
            story=one_line(story),
            continuation=one_line(text),
            confidence=result.confidence,
            new_tokens=len(result.token_ids),
            seconds=seconds,
            seed=result.seed,
            finish_reason=None if draft else result.finish_reason,
        )

    # ----- telling -----------------------------------------------------------------
    def story_settings(
        self, prompt: str, settings: GenerationConfig | None = None, **overrides: Any
    ) -> GenerationConfig:
        """Settings for a story: unless told otherwise, stop once the story has two sentences
        (one more after a one-sentence prompt, two after an empty one)."""
        settings = self.settings(settings, **overrides)
        if settings.stop_after_sentences is None:
            settings = settings.replace(stop_after_sentences=max(1, STORY_SENTENCES - count_sentences(prompt)))
        return settings

    def tell_many(
        self, prompt: str | None = "", n: int = 1, settings: GenerationConfig | None = None, **overrides: Any
    ) -> list[Story]:
        """`n` stories continuing `prompt` (empty: the model writes its own first sentence)."""
        prompt = clean_text(prompt)
        settings = self.story_settings(prompt, settings, **overrides)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_BATCH_SIZE:
            raise UserError(f"n must be a whole number between 1 and {MAX_BATCH_SIZE}, got {n!r}")
        started = time.perf_counter()
        with self._lock:
            prompt_ids, boundary = self._healed_prompt(prompt)
            results = generation.generate(self.engine, self.tokenizer, prompt_ids, settings, n, boundary=boundary)
        seconds = (time.perf_counter() - started) / n
        return [self._story(prompt, result, seconds) for result in results]

    def tell(self, prompt: str | None = "", settings: GenerationConfig | None = None, **overrides: Any) -> Story:
        """One story continuing `prompt`: the surest of the settings' `best_of` samples."""
        return self.best_of(prompt, None, settings, **overrides)[0]

    def best_of(
        self, prompt: str | None = "", n: int | None = None, settings: GenerationConfig | None = None, **overrides: Any
    ) -> list[Story]:
        """Sample `n` stories (None: the settings' `best_of`) and return them ranked by confidence,
        best first."""
        settings = self.settings(settings, **overrides)
        stories = self.tell_many(prompt, settings.best_of if n is None else n, settings)
        return sorted(stories, key=lambda story: story.confidence, reverse=True)

    def stream(
        self, prompt: str | None = "", settings: GenerationConfig | None = None, **overrides: Any
    ) -> Iterator[Story]:
        """Yield the story so far as it grows (drafts: `finish_reason` None), then the finished Story.

        The lock is held one token at a time, so concurrent streams interleave fairly."""
        prompt = clean_text(prompt)
        settings = generation.with_seed(self.story_settings(prompt, settings, **overrides))
        started = time.perf_counter()
        prompt_ids, boundary = self._healed_prompt(prompt)
        steps = generation.stream(self.engine, self.tokenizer, prompt_ids, settings, boundary=boundary)
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
            draft = generation.Generation([], text, "length", seed=settings.seed)
            yield self._story(prompt, draft, time.perf_counter() - started, draft=True)

    # ----- story chain ---------------------------------------------------------------
    def chain_window_tokens(self, settings: GenerationConfig | None = None) -> int:
        """How many tokens of a chain the model is shown: its window less the new tokens and the
        start token."""
        settings = settings or self.generation_config
        return max(1, self.config.context_length - settings.max_new_tokens - 1)

    def chain_view_start(self, sentences: list[str], settings: GenerationConfig | None = None) -> int:
        """Index of the oldest sentence the model still sees (older ones stay in the story)."""
        return window_start(sentences, self.chain_window_tokens(settings), self._sentence_tokens)

    def _sentence_tokens(self, sentence: str) -> int:
        # Cleaned here, so a long chain is cleaned only as far back as the model reads.
        sentence = clean_text(sentence, "sentence")
        return len(self.tokenizer.encode(" " + sentence)) if sentence else 0

    def continue_chain(
        self, sentences: list[str], settings: GenerationConfig | None = None, attempts: int = 3, **overrides: Any
    ) -> Story:
        """The model's next sentence after `sentences` (empty: it opens the chain).

        Only the most recent sentences that fit the model's window are shown to it."""
        if not isinstance(sentences, (list, tuple)):
            raise UserError("sentences must be a list of strings")
        # Check every sentence but clean only those in the window, so a huge chain stays cheap.
        for sentence in sentences:
            if not isinstance(sentence, str) or len(sentence) > MAX_PROMPT_CHARS:
                clean_text(sentence, "sentence")  # raises the usual message; None is an empty sentence
        settings = self.settings(settings, **overrides).replace(stop_after_sentences=1)
        # A model trained on chains starts them with <CHAIN> and knows the story goes on, so it may
        # end the story itself; one without it is kept writing past <EOS> (its artefacts: "now.,").
        chain_id = self.tokenizer.chain_id
        seen = sentences[self.chain_view_start(sentences, settings) :]
        prompt = " ".join(cleaned for cleaned in (clean_text(sentence, "sentence") for sentence in seen) if cleaned)
        prompt_ids, boundary = self._healed_prompt(prompt, chain_id)
        prompt_ids = prompt_ids[-self.chain_window_tokens(settings) :]
        for attempt in range(attempts):
            seed_settings = settings if attempt == 0 else settings.replace(seed=(settings.seed or 0) + attempt)
            # The last try bans <EOS>: a chain must get its sentence even where the model would end.
            seed_settings = seed_settings.replace(allow_eos=chain_id is not None and attempt < attempts - 1)
            started = time.perf_counter()
            with self._lock:
                result = generation.generate(self.engine, self.tokenizer, prompt_ids, seed_settings, boundary=boundary)[
                    0
                ]
            story = self._story(prompt, result, time.perf_counter() - started)
            if story.continuation and (result.finish_reason != "eos" or ends_with_sentence(story.continuation)):
                return story
        raise GenerationError("the model wrote no sentence; try again or change the settings")

    # ----- scoring -------------------------------------------------------------------
    def score(self, text: str, prompt: str | None = None) -> Score:
        """How likely the model finds `text` (after `prompt`, if given; else as a whole story)."""
        text = clean_text(text, "text", MAX_SCORE_CHARS)
        if not text:
            raise UserError("text to score is empty")
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
