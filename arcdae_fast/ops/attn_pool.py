"""Attention pooling of tokens by K learned queries (SPEC section 3, part codes)."""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

from . import _backends, _ext, _triton
from . import _selfcheck as _selfcheck_mod
from ._validate import check_nonempty, check_positive, check_same, check_tensor

OP = "attn_pool"  # the one name: registry, kernels, custom op, C++ schema, test, bench
FN = "attention_pool"  # the public function (error messages)
# Test tolerances of the fast backends against the float64 reference (added to
# 2 x the error of the reference run in the same input dtype).
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.bfloat16: dict(atol=1e-2, rtol=2e-2)}


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
    check_tensor(FN, "x", x, shape=("B", "N", "C"))
    b, n, c = x.shape
    check_tensor(FN, "query", query, shape=("K", "Dk"), device=x.device)
    check_tensor(FN, "key_weight", key_weight, shape=(None, None), device=x.device)
    check_same(FN, "Dk (query size)", query=query.shape[1], key_weight=key_weight.shape[0])
    check_same(FN, "C (channels)", x=c, key_weight=key_weight.shape[1])
    check_nonempty(FN, "x", x, 1, "token set (N = 0)")
    check_nonempty(FN, "query", query, 0, "query set (K = 0)")
    scale = 1.0 / math.sqrt(query.shape[1]) if scale is None else check_positive(FN, "scale", scale)
    impl = _backends.resolve(OP, backend, x.device, x.dtype, size=b * n * c)
    if impl.name == "reference":
        return impl.fn(x, query, key_weight, scale)
    return torch.ops.arcdae_fast.attn_pool(x, query, key_weight, scale, impl.name)[0]


@_backends.outside_autocast
def attention_pool_reference(
    x: torch.Tensor, query: torch.Tensor, key_weight: torch.Tensor, scale: float
) -> torch.Tensor:
    """Eager ground truth (folds the key projection into the queries); in float32 (float64
    for float64 inputs), also inside an autocast region, as the fast backends compute it."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(ct)
    qk = query.to(ct) @ key_weight.to(ct)  # (K, C) = W_K^T q_k, one row per query
    rho = torch.softmax(torch.einsum("bnc,kc->bkn", xf, qk) * scale, dim=-1)
    return (rho @ xf).to(x.dtype)


_backends.register_reference(OP, attention_pool_reference)


def _selfcheck(backend: str, device: torch.device) -> str | None:
    def run(be, dev, dt):
        (x,) = _selfcheck_mod.leaves(dev, dt, _selfcheck_mod.randn(3, 20, 48, seed=0))
        q, w = _selfcheck_mod.leaves(
            dev,
            torch.float32,
            _selfcheck_mod.randn(5, 16, seed=1),
            _selfcheck_mod.randn(16, 48, seed=2) / 7,
        )
        out = attention_pool(x, q, w, backend=be)
        go = _selfcheck_mod.randn(3, 5, 48, seed=3).to(dev, out.dtype)
        return [out, *torch.autograd.grad(out, (x, q, w), go)]

    return _selfcheck_mod.compare(run, backend, device)


_triton.register(OP, selfcheck=_selfcheck)
# measured crossover on a 2-core CPU: B N C ~ 2.5e5 (fwd+bwd)
_ext.register(OP, selfcheck=_selfcheck)

# -- fast backends: a backend supplies pool_fwd(x, qk) -> (out, lse) and
#    pool_bwd(dout, x, qk, delta, lse) -> (dx, dqk) (see kernels/attn_pool.py), with
#    qk = scale * query @ key_weight folded here (K x Dk x C: tiny).


def _folded_queries(query: torch.Tensor, key_weight: torch.Tensor, scale: float) -> torch.Tensor:
    return (query.float() @ key_weight.float()) * scale


@torch.library.custom_op("arcdae_fast::attn_pool", mutates_args=())
def _pool_fwd(
    x: torch.Tensor, query: torch.Tensor, key_weight: torch.Tensor, scale: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, K, C) in x.dtype, lse (B, K) float32 saved for backward)."""
    prim = _backends.primitives(OP, backend)
    return prim.pool_fwd(x, _folded_queries(query, key_weight, scale))


@_pool_fwd.register_fake
def _(x, query, key_weight, scale, backend):
    b, _, c = x.shape
    k = query.shape[0]
    return x.new_empty(b, k, c), x.new_empty(b, k, dtype=torch.float32)


@torch.library.custom_op("arcdae_fast::attn_pool_backward", mutates_args=())
def _pool_bwd(
    dout: torch.Tensor,
    x: torch.Tensor,
    query: torch.Tensor,
    key_weight: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    scale: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prim = _backends.primitives(OP, backend)
    qk = _folded_queries(query, key_weight, scale)
    delta = (dout.float() * out.float()).sum(-1)  # (B, K)
    dx, dqk = prim.pool_bwd(dout.contiguous(), x, qk, delta, lse)
    dquery = (dqk @ key_weight.float().T) * scale
    dkey_weight = (query.float().T @ dqk) * scale
    return dx, dquery.to(query.dtype), dkey_weight.to(key_weight.dtype)


@_pool_bwd.register_fake
def _(dout, x, query, key_weight, out, lse, scale, backend):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(query),
        torch.empty_like(key_weight),
    )


def _setup_context(ctx, inputs, output):
    x, query, key_weight, scale, backend = inputs
    ctx.save_for_backward(x, query, key_weight, *output)
    ctx.set_materialize_grads(False)  # unused outputs' gradients stay None, not zeros
    ctx.args = (scale, backend)


def _backward(ctx, grad_out, _grad_lse):
    if grad_out is None:
        return None, None, None, None, None
    dx, dq, dw = _pool_bwd(grad_out, *ctx.saved_tensors, *ctx.args)
    return dx, dq, dw, None, None


_pool_fwd.register_autograd(_backward, setup_context=_setup_context)


# FLOPs for torch.utils.flop_counter: the matmul work of the eager reference (folding,
# scores, pooling; backward twice the forward).
def _pool_flops(x_shape, query_shape, key_weight_shape) -> int:
    (b, n, c), (k, dk) = x_shape, query_shape
    return 4 * b * n * c * k + 2 * k * dk * c


@register_flop_formula(torch.ops.arcdae_fast.attn_pool)
def _(x_shape, query_shape, key_weight_shape, *args, out_shape=None, **kwargs) -> int:
    return _pool_flops(x_shape, query_shape, key_weight_shape)


@register_flop_formula(torch.ops.arcdae_fast.attn_pool_backward)
def _(dout_shape, x_shape, query_shape, key_weight_shape, *args, out_shape=None, **kwargs):
    return 2 * _pool_flops(x_shape, query_shape, key_weight_shape)
