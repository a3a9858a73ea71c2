"""Attention pooling of tokens by K learned queries (SPEC section 3, part codes)."""

from __future__ import annotations

import math

import torch

from . import _backends
from ._validate import check_nonempty, check_positive, check_same, check_tensor

OP = "attention_pool"


def attention_pool(
    x: torch.Tensor,
    query: torch.Tensor,
    key_weight: torch.Tensor,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Pool B sets of N tokens into K vectors each.

    x: (B, N, C) tokens; query: (K, Dk) learned queries; key_weight: (Dk, C) the linear key
    projection W_K (keys W_K x_u). scale defaults to 1 / sqrt(Dk). Returns (B, K, C) in
    x's dtype (computed in float32 for bf16/fp16)::

        rho[b, k, :] = softmax_u(scale * <query_k, W_K x[b, u]>)
        out[b, k]    = sum_u rho[b, k, u] * x[b, u]

    Because W_K is linear, <q_k, W_K x_u> = <W_K^T q_k, x_u>: keys are never needed (a bias
    on the keys would cancel in the softmax, so there is none). An empty batch (B = 0)
    returns an empty (0, K, C) tensor; N = 0 tokens is an error.

    Equivalent PyTorch::

        keys = x @ key_weight.T                                  # (B, N, Dk)
        F.scaled_dot_product_attention(query.expand(B, K, Dk), keys, x, scale=scale)
    """
    check_tensor(OP, "x", x, shape=("B", "N", "C"))
    b, n, c = x.shape
    check_tensor(OP, "query", query, shape=("K", "Dk"), device=x.device)
    check_tensor(OP, "key_weight", key_weight, shape=(None, None), device=x.device)
    check_same(OP, "Dk (query size)", query=query.shape[1], key_weight=key_weight.shape[0])
    check_same(OP, "C (channels)", x=c, key_weight=key_weight.shape[1])
    check_nonempty(OP, "x", x, 1, "token set (N = 0)")
    check_nonempty(OP, "query", query, 0, "query set (K = 0)")
    scale = 1.0 / math.sqrt(query.shape[1]) if scale is None else check_positive(OP, "scale", scale)
    impl = _backends.resolve(OP, backend, x.device, x.dtype)
    return impl.fn(x, query, key_weight, scale)


def attention_pool_reference(
    x: torch.Tensor, query: torch.Tensor, key_weight: torch.Tensor, scale: float
) -> torch.Tensor:
    """Eager ground truth (folds the key projection into the queries)."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(ct)
    qk = query.to(ct) @ key_weight.to(ct)  # (K, C) = W_K^T q_k, one row per query
    rho = torch.softmax(torch.einsum("bnc,kc->bkn", xf, qk) * scale, dim=-1)
    return (rho @ xf).to(x.dtype)


_backends.register(
    OP,
    "reference",
    attention_pool_reference,
    priority={"cpu": 0, "cuda": 0, "mps": 0, "meta": 0},
    dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16),
)
