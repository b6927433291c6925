"""The transformer: a GPT-style decoder-only language model with a key/value cache.

Token + learned position embeddings, pre-norm blocks (LayerNorm -> causal self-attention ->
residual, LayerNorm -> GELU MLP -> residual), a final LayerNorm and a linear LM head.
Attention goes through `scaled_dot_product_attention`, which picks the fastest kernel.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from horror.config import ModelConfig


class KVCache:
    """Preallocated keys and values for every layer, so decoding never re-allocates.

    Layout per layer: (batch, n_heads, context_length, head_dim). `length` is how many
    positions are filled; the model writes new positions at `length` and advances it.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        device: torch.device,
        dtype: torch.dtype,
        capacity: int | None = None,
    ):
        self.capacity = min(capacity or config.context_length, config.context_length)
        shape = (config.n_layers, batch_size, config.n_heads, self.capacity, config.head_dim)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        batch, steps, d_model = x.shape
        # (B, T, 3*d) -> 3 x (B, H, T, hd)
        q, k, v = self.qkv(x).view(batch, steps, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cache is None:
            attended = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )
        else:
            start, end = cache.length, cache.length + steps
            keys, values = cache.keys[layer], cache.values[layer]  # (B, H, context, hd) views
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            k, v = keys[:, :, :end], values[:, :, :end]
            if steps == 1:  # one new token sees every cached position: no mask needed
                attended = F.scaled_dot_product_attention(q, k, v)
            elif start == 0:
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # several new tokens after a cached prefix: causal mask offset by `start`
                mask = torch.ones(steps, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
                attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(batch, steps, d_model)
        return self.resid_dropout(self.proj(attended))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_mlp = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x), cache, layer)
        return x + self.mlp(self.ln_mlp(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.context_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init for the projections that feed the residual stream.
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / (2 * config.n_layers) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Distinct parameters (a tied head is counted once)."""
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def new_cache(self, batch_size: int) -> KVCache:
        weight = self.token_embedding.weight
        return KVCache(self.config, batch_size, weight.device, weight.dtype)

    def forward(
        self,
        token_ids: torch.Tensor,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits for `token_ids` (B, T). With a cache, positions continue after `cache.length`.

        `last_only` computes the LM head for the final position only (what sampling needs).
        """
        batch, steps = token_ids.shape
        start = cache.length if cache is not None else 0
        if start + steps > self.config.context_length:
            raise ValueError(
                f"sequence of {start + steps} tokens exceeds the context length {self.config.context_length}"
            )
        # Slicing the position table is the same lookup as embedding an arange, with fewer ops per token.
        x = self.dropout(self.token_embedding(token_ids) + self.position_embedding.weight[start : start + steps])
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length += steps
        if last_only:
            x = x[:, -1:, :]
        return self.lm_head(self.ln_final(x))
