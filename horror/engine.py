"""The engine seam: what generation needs from a model, and the PyTorch engine.

Generation asks an engine for logits of new tokens (`forward`, continuing a cache from
`new_cache`) and for the next token (`choose_next`, the engine's sampler, given to it when it is
made). Two engines stand behind it: `TorchEngine` (a GPT, fp32 or with int8 Linears) and the C
decoder (`horror.native.NativeGPT`); `horror.inference.prepare_for_inference` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn as nn

from horror.config import GenerationConfig, ModelConfig
from horror.model import GPT, KVCache

# A sampler chooses the next token per row (B,) from logits (B, V), the context (B, T), the settings,
# a random generator and the <EOS> id (banned unless the settings allow it); it returns the ids and
# their log-probabilities under the raw logits. horror.sampling.choose_next_and_log_probs is one.
Sampler = Callable[
    [torch.Tensor, torch.Tensor, GenerationConfig, torch.Generator | None, int | None],
    tuple[torch.Tensor, torch.Tensor],
]


class Engine(Protocol):
    """A model generation can run: GPT.forward's contract, a cache, and `choose_next`, a Sampler."""

    config: ModelConfig
    choose_next: Sampler

    @property
    def device(self) -> torch.device: ...

    def new_cache(self, batch_size: int) -> KVCache: ...

    def forward(
        self, token_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor: ...


class TorchEngine(nn.Module):
    """A GPT (fp32, or with int8 Linears from horror.inference) and the sampler it draws with."""

    def __init__(self, model: GPT, sampler: Sampler):
        super().__init__()
        self.model = model
        self.config = model.config
        self.choose_next = sampler

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    def new_cache(self, batch_size: int) -> KVCache:
        return self.model.new_cache(batch_size)

    def forward(self, token_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        return self.model(token_ids, cache, last_only)
