"""The engine seam: what generation needs from a model, and the PyTorch engine.

Generation asks an engine for logits of new tokens (`forward`, continuing a cache from
`new_cache`) and for the next token (`choose_next`, the engine's sampler, given to it when it is
made). Two engines stand behind it: `TorchEngine` (a GPT, fp32 or with int8 Linears) and the C
decoder (`horror.native.NativeGPT`); `horror.inference.prepare_for_inference` picks one.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn

from horror.config import GenerationConfig, ModelConfig
from horror.model import GPT, KVCache


class Sampler(Protocol):
    """Chooses the next token per row (B,) from logits (B, V) and the context (B, T); returns the
    ids and their log-probabilities under the raw logits. `eos_id` is banned unless allowed."""

    def __call__(
        self,
        logits: torch.Tensor,
        context: torch.Tensor,
        settings: GenerationConfig,
        generator: torch.Generator | None,
        eos_id: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class Engine(Protocol):
    """A model generation can run: GPT.forward's contract, a cache and a sampler."""

    config: ModelConfig

    @property
    def device(self) -> torch.device: ...

    def new_cache(self, batch_size: int) -> KVCache: ...

    def forward(
        self, token_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor: ...

    def choose_next(
        self,
        logits: torch.Tensor,
        context: torch.Tensor,
        settings: GenerationConfig,
        generator: torch.Generator | None,
        eos_id: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class TorchEngine(nn.Module):
    """A GPT (fp32, or with int8 Linears from horror.inference) and the sampler it draws with."""

    def __init__(self, model: GPT, sampler: Sampler):
        super().__init__()
        self.model = model
        self.config = model.config
        self.sampler = sampler

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    def new_cache(self, batch_size: int) -> KVCache:
        return self.model.new_cache(batch_size)

    def forward(self, token_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        return self.model(token_ids, cache, last_only)

    def choose_next(
        self,
        logits: torch.Tensor,
        context: torch.Tensor,
        settings: GenerationConfig,
        generator: torch.Generator | None,
        eos_id: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sampler(logits, context, settings, generator, eos_id)
