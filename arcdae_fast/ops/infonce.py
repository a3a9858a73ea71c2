"""SNR-weighted InfoNCE (SPEC section 4): the public op and its eager reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from . import _backends, _ext, _triton
from . import _selfcheck as _selfcheck_mod
from ._validate import check_choice, check_nonempty, check_positive, check_same, check_tensor

OP = "infonce"  # the one name: registry, kernels, custom op, C++ schema, test, bench
FN = "snr_weighted_infonce"  # the public function (error messages)
REDUCTIONS = ("mean", "sum", "none")
NORM_EPS = 1e-12  # x / max(||x||, eps), as F.normalize
# Test tolerances of the fast backends against the float64 reference (added to
# 2 x the error of the reference run in the same input dtype).
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-4), torch.bfloat16: dict(atol=1e-3, rtol=2e-2)}


def snr_weighted_infonce(
    query: torch.Tensor,
    key: torch.Tensor,
    weight: torch.Tensor | None = None,
    temperature: float = 0.1,
    *,
    normalize: bool = True,
    symmetric: bool = False,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Weighted InfoNCE over rows, positives on the diagonal.

    query, key: (N, D); weight: (N,) or None (all ones). With q = normalize(query),
    k = normalize(key) (when `normalize`) and logits s_ij = <q_i, k_j> / temperature:

        l_i = logsumexp_j s_ij - s_ii
        loss = sum_i w_i * l_i / N          (reduction="mean": NOT divided by sum w)

    `symmetric=True` averages the row loss with the column loss
    l'_j = logsumexp_i s_ij - s_jj (column j weighted by w_j). reduction "none" returns the
    (N,) weighted per-row losses, "sum" their sum. Both inputs may require grad. Inputs in
    bf16/fp16 are computed in float32; the result is float32 (float64 for float64 inputs).
    NaN/inf in the inputs propagate to the result.

    Equivalent PyTorch::

        q, k = F.normalize(query.float(), dim=1), F.normalize(key.float(), dim=1)
        l = F.cross_entropy(q @ k.T / temperature, torch.arange(N), reduction="none")
        loss = (weight * l).mean()
    """
    check_tensor(FN, "query", query, shape=("N", "D"))
    n, d = query.shape
    check_tensor(FN, "key", key, shape=(None, None), device=query.device)
    check_same(FN, "N (rows)", query=n, key=key.shape[0])
    check_same(FN, "D (feature size)", query=d, key=key.shape[1])
    check_nonempty(FN, "query", query, 0, "batch (N = 0 rows)")
    check_nonempty(FN, "query", query, 1, "feature dimension (D = 0)")
    if weight is not None:
        check_tensor(FN, "weight", weight, shape=(n,), device=query.device)
    temperature = check_positive(FN, "temperature", temperature)
    check_choice(FN, "reduction", reduction, REDUCTIONS)
    impl = _backends.resolve(OP, backend, query.device, query.dtype, size=n * n * d)
    if impl.name == "reference":
        return impl.fn(query, key, weight, temperature, bool(normalize), bool(symmetric), reduction)
    per = torch.ops.arcdae_fast.infonce(
        query, key, temperature, bool(normalize), bool(symmetric), impl.name
    )[0]
    if weight is not None:
        per = per * weight.to(per.dtype)  # autograd gives the weight its gradient too
    if reduction == "none":
        return per
    return per.sum() / (per.shape[0] if reduction == "mean" else 1)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@_backends.outside_autocast
def snr_weighted_infonce_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    weight: torch.Tensor | None,
    temperature: float,
    normalize: bool,
    symmetric: bool,
    reduction: str,
) -> torch.Tensor:
    """Eager ground truth: materializes the N x N logits. Always in float32 (float64 for
    float64 inputs), also inside an autocast region, as the fast backends compute it."""
    ct = compute_dtype(query.dtype)
    q, k = query.to(ct), key.to(ct)
    if normalize:
        q, k = F.normalize(q, dim=1, eps=NORM_EPS), F.normalize(k, dim=1, eps=NORM_EPS)
    logits = q @ k.T / temperature
    diag = logits.diagonal()
    per = torch.logsumexp(logits, dim=1) - diag
    if symmetric:
        per = 0.5 * (per + torch.logsumexp(logits, dim=0) - diag)
    if weight is not None:
        per = per * weight.to(ct)
    if reduction == "none":
        return per
    return per.sum() / (per.shape[0] if reduction == "mean" else 1)


_backends.register_reference(OP, snr_weighted_infonce_reference)


def _selfcheck(backend: str, device: torch.device) -> str | None:
    def run(be, dev, dt):
        q, k = _selfcheck_mod.leaves(
            dev, dt, _selfcheck_mod.randn(37, 24, seed=0), _selfcheck_mod.randn(37, 24, seed=1)
        )
        w = torch.rand(37, generator=torch.Generator().manual_seed(2)).to(dev)
        loss = snr_weighted_infonce(q, k, w, 0.2, symmetric=True, backend=be)
        return [loss, *torch.autograd.grad(loss, (q, k))]

    return _selfcheck_mod.compare(run, backend, device)


_triton.register(OP, selfcheck=_selfcheck)
# measured crossover on a 2-core CPU: parity at N^2 D ~ 1.1e9 (fwd+bwd; 1.15x at N = 4096,
# D = 128, 0.6-0.8x for N <= 1024)
_ext.register(OP, selfcheck=_selfcheck)

# -- fast backends: one custom op pair; a backend supplies two primitives -------------------
#   lse_rows(q, k, inv_q, inv_k, scale) -> (N,) float32 row logsumexp of the logit matrix
#   grad_rows(q, k, inv_q, inv_k, scale, lse_own, c_own, lse_other, c_other) -> (N, D) float32
# (see kernels/infonce.py); the O(N*D) parts (norms, positives, normalize backward) are here.


def _norms(x: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(||x_i||, 1 / max(||x_i||, eps)) in float32; ones when not normalizing."""
    if not normalize:
        ones = x.new_ones(x.shape[0], dtype=torch.float32)
        return ones, ones
    norm = torch.linalg.vector_norm(x.float(), dim=1)
    return norm, 1.0 / norm.clamp_min(NORM_EPS)


@torch.library.custom_op("arcdae_fast::infonce", mutates_args=())
def _infonce(
    query: torch.Tensor,
    key: torch.Tensor,
    temperature: float,
    normalize: bool,
    symmetric: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unweighted per-row losses (N,) and the row / column LSEs saved for backward."""
    prim = _backends.primitives(OP, backend)
    scale = 1.0 / temperature
    (_, inv_q), (_, inv_k) = _norms(query, normalize), _norms(key, normalize)
    diag = (query.float() * key.float()).sum(1) * inv_q * inv_k * scale
    lse_r = prim.lse_rows(query, key, inv_q, inv_k, scale)
    loss = lse_r - diag
    lse_c = lse_r.new_empty(0)
    if symmetric:
        lse_c = prim.lse_rows(key, query, inv_k, inv_q, scale)
        loss = 0.5 * (loss + lse_c - diag)
    return loss, lse_r, lse_c


@_infonce.register_fake
def _(query, key, temperature, normalize, symmetric, backend):
    n = query.shape[0]
    f32 = dict(dtype=torch.float32)
    return (
        query.new_empty(n, **f32),
        query.new_empty(n, **f32),
        query.new_empty(n if symmetric else 0, **f32),
    )


@torch.library.custom_op("arcdae_fast::infonce_backward", mutates_args=())
def _infonce_backward(
    grad: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    lse_r: torch.Tensor,
    lse_c: torch.Tensor,
    temperature: float,
    normalize: bool,
    symmetric: bool,
    backend: str,
    need_query: bool,
    need_key: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of sum_i grad_i * loss_i w.r.t. query and key (empty when not needed)."""
    prim = _backends.primitives(OP, backend)
    scale = 1.0 / temperature
    (norm_q, inv_q), (norm_k, inv_k) = _norms(query, normalize), _norms(key, normalize)
    a = grad.float() * (0.5 if symmetric else 1.0)  # coefficient of the row losses
    b = a if symmetric else None  # ... and of the column losses
    lse_col = lse_c if symmetric else None
    positives = (a + b if symmetric else a) * scale  # d/ds_ii of -s_ii terms
    out = []
    for need, x, y, norm_x, inv_x, inv_y, own, other in (
        (need_query, query, key, norm_q, inv_q, inv_k, (lse_r, a), (lse_col, b)),
        (need_key, key, query, norm_k, inv_k, inv_q, (lse_col, b), (lse_r, a)),
    ):
        if not need:
            out.append(x.new_empty(0))
            continue
        dxn = prim.grad_rows(x, y, inv_x, inv_y, scale, *own, *other)
        xn = x.float() * inv_x[:, None]
        dxn = dxn - positives[:, None] * (y.float() * inv_y[:, None])
        if normalize:  # d(x / max(|x|, eps)): project out the radial part unless clamped
            radial = xn * (xn * dxn).sum(1, keepdim=True)
            dxn = torch.where((norm_x > NORM_EPS)[:, None], dxn - radial, dxn)
            dxn = dxn * inv_x[:, None]
        out.append(dxn.to(x.dtype))
    return out[0], out[1]


@_infonce_backward.register_fake
def _(
    grad, query, key, lse_r, lse_c, temperature, normalize, symmetric, backend, need_query, need_key
):
    return (
        torch.empty_like(query) if need_query else query.new_empty(0),
        torch.empty_like(key) if need_key else key.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    query, key, temperature, normalize, symmetric, backend = inputs
    ctx.save_for_backward(query, key, output[1], output[2])
    ctx.set_materialize_grads(False)  # unused outputs' gradients stay None, not zeros
    ctx.args = (temperature, normalize, symmetric, backend)


def _backward(ctx, grad_loss, _grad_lse_r, _grad_lse_c):
    if grad_loss is None:  # the losses did not reach the output
        return None, None, None, None, None, None
    query, key, lse_r, lse_c = ctx.saved_tensors
    need_q, need_k = ctx.needs_input_grad[:2]
    dq, dk = _infonce_backward(grad_loss, query, key, lse_r, lse_c, *ctx.args, need_q, need_k)
    return dq if need_q else None, dk if need_k else None, None, None, None, None


_infonce.register_autograd(_backward, setup_context=_setup_context)


# FLOPs for torch.utils.flop_counter (the profiler's MFU): the matmul work of the eager
# reference, so a step counts the same FLOPs whichever backend runs it.
@register_flop_formula(torch.ops.arcdae_fast.infonce)
def _rows_flops(query_shape, key_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * query_shape[0] * key_shape[0] * query_shape[1]  # the logit matrix


@register_flop_formula(torch.ops.arcdae_fast.infonce_backward)
def _rows_backward_flops(grad_shape, query_shape, key_shape, *args, out_shape=None, **kwargs):
    need = int(bool(out_shape[0][0])) + int(bool(out_shape[1][0]))  # empty when not needed
    return 2 * query_shape[0] * key_shape[0] * query_shape[1] * need
