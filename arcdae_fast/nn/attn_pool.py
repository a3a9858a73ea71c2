"""Modules around `attention_pool`: the learned-query pool and the ArcDAE part head."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.attn_pool import attention_pool


class AttentionPool(nn.Module):
    """K learned queries pool N tokens of width C: (B, N, C) -> (B, K, C).

    Holds query (K, Dk) and the linear key projection key_weight (Dk, C); the keys are never
    formed (see `attention_pool`). `backend` is the op's argument ("auto": the process-level
    choice, see arcdae_fast.ops.use_backend)."""

    def __init__(
        self, channels: int, num_queries: int = 8, key_dim: int = 64, backend: str = "auto"
    ):
        super().__init__()
        self.query = nn.Parameter(torch.randn(num_queries, key_dim))
        self.key_weight = nn.Parameter(torch.randn(key_dim, channels) / math.sqrt(channels))
        self.backend = backend

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return attention_pool(tokens, self.query, self.key_weight, backend=self.backend)


class PartHead(nn.Module):
    """ArcDAE part codes (SPEC section 3): z_part,k = P_part(sum_u rho_k(u) h(u)).

    Input tokens (B, N, C); output (B, K, d_p), P_part shared across the K parts."""

    def __init__(
        self,
        channels: int,
        num_parts: int = 8,
        key_dim: int = 64,
        part_dim: int = 128,
    ):
        super().__init__()
        self.pool = AttentionPool(channels, num_parts, key_dim)
        self.proj = nn.Linear(channels, part_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(tokens))
