"""Attention pooling kernels (SPEC section 3): K learned queries over N tokens per batch element.

The key projection is folded into the queries (qk = scale * query @ key_weight, (K, C)), so
keys are never formed: logits[k, u] = <qk_k, x_u>. One program per (batch element, output
channel chunk) streams the element's tokens once for all K queries with an online softmax.

- `pool_fwd(x, qk) -> (out (B, K, C) in x.dtype, lse (B, K) float32)`
- `pool_bwd(dout, x, qk, delta, lse) -> (dx (B, N, C) in x.dtype, dqk (K, C) float32)`, with
  delta[b, k] = <dout[b, k], out[b, k]> precomputed, p = exp(logits - lse),
  dlogits = p * (<dout_k, x_u> - delta_k), dx_u = sum_k p_ku dout_k + dlogits_ku qk_k and
  dqk = sum_{b,u} dlogits_ku x_u (per-element partials summed by the caller).
"""

import torch
import triton
import triton.language as tl

from . import INTERPRET, next_pow2

BLOCK_N = 32


@triton.jit
def _dots(
    A,
    X,
    ra,
    rn,
    mask_a,
    mask_n,
    C,
    sac,
    sxn,
    sxc,
    BLOCK_A: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    LOWP: tl.constexpr,
):
    """(BLOCK_A, BLOCK_N) = A[ra, :] . X[rn, :] over all C channels (A: unit channel stride)."""
    acc = tl.zeros((BLOCK_A, BLOCK_N), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        rc = c0 + tl.arange(0, BLOCK_C)
        mask_c = rc < C
        a = tl.load(
            A + ra[:, None] * sac + rc[None, :], mask=mask_a[:, None] & mask_c[None, :], other=0.0
        )
        x = tl.load(
            X + rn[:, None] * sxn + rc[None, :] * sxc,
            mask=mask_n[:, None] & mask_c[None, :],
            other=0.0,
        )
        if LOWP:
            acc = tl.dot(a.to(x.dtype), tl.trans(x), acc)
        else:
            acc = tl.dot(a.to(tl.float32), tl.trans(x.to(tl.float32)), acc, input_precision="ieee")
    return acc


@triton.jit
def _fwd_kernel(
    X,
    QK,
    OUT,
    LSE,
    N,
    C,
    K,
    sxb,
    sxn,
    sxc,
    sob,
    sok,
    soc,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    LOWP: tl.constexpr,
):
    b = tl.program_id(0)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rk = tl.arange(0, BLOCK_K)
    mask_k, mask_c = rk < K, rc < C
    Xb = X + b * sxb
    m_i = tl.full((BLOCK_K,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_K,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        mask_n = rn < N
        s = _dots(QK, Xb, rk, rn, mask_k, mask_n, C, C, sxn, sxc, BLOCK_K, BLOCK_N, BLOCK_C, LOWP)
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        x = tl.load(
            Xb + rn[:, None] * sxn + rc[None, :] * sxc,
            mask=mask_n[:, None] & mask_c[None, :],
            other=0.0,
        )
        if LOWP:
            acc = tl.dot(p.to(x.dtype), x, acc * alpha[:, None])
        else:
            acc = tl.dot(p, x.to(tl.float32), acc * alpha[:, None], input_precision="ieee")
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(
        OUT + b * sob + rk[:, None] * sok + rc[None, :] * soc,
        out.to(OUT.dtype.element_ty),
        mask=mask_k[:, None] & mask_c[None, :],
    )
    if tl.program_id(1) == 0:
        tl.store(LSE + b * K + rk, m_i + tl.log(l_i), mask=mask_k)


@triton.jit
def _bwd_kernel(
    X,
    QK,
    DOUT,
    DELTA,
    LSE,
    DX,
    DQK,
    N,
    C,
    K,
    sxb,
    sxn,
    sxc,
    sdb,
    sdk,
    sdc,
    sgb,
    sgn,
    sgc,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    LOWP: tl.constexpr,
):
    b = tl.program_id(0)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    rk = tl.arange(0, BLOCK_K)
    mask_k, mask_c = rk < K, rc < C
    Xb, Db = X + b * sxb, DOUT + b * sdb
    lse = tl.load(LSE + b * K + rk, mask=mask_k, other=0.0)
    delta = tl.load(DELTA + b * K + rk, mask=mask_k, other=0.0)
    mask_kc = mask_k[:, None] & mask_c[None, :]
    dout = tl.load(Db + rk[:, None] * sdk + rc[None, :] * sdc, mask=mask_kc, other=0.0)
    qk = tl.load(QK + rk[:, None] * C + rc[None, :], mask=mask_kc, other=0.0)
    dqk = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        mask_n = rn < N
        s = _dots(QK, Xb, rk, rn, mask_k, mask_n, C, C, sxn, sxc, BLOCK_K, BLOCK_N, BLOCK_C, LOWP)
        dp = _dots(
            Db, Xb, rk, rn, mask_k, mask_n, C, sdk, sxn, sxc, BLOCK_K, BLOCK_N, BLOCK_C, LOWP
        )
        p = tl.where(mask_k[:, None] & mask_n[None, :], tl.exp(s - lse[:, None]), 0.0)
        ds = p * (dp - delta[:, None])
        mask_nc = mask_n[:, None] & mask_c[None, :]
        x = tl.load(Xb + rn[:, None] * sxn + rc[None, :] * sxc, mask=mask_nc, other=0.0)
        if LOWP:
            dx = tl.dot(tl.trans(p).to(x.dtype), dout.to(x.dtype))
            dx = tl.dot(tl.trans(ds).to(x.dtype), qk.to(x.dtype), dx)
            dqk = tl.dot(ds.to(x.dtype), x, dqk)
        else:
            dx = tl.dot(tl.trans(p), dout.to(tl.float32), input_precision="ieee")
            dx = tl.dot(tl.trans(ds), qk, dx, input_precision="ieee")
            dqk = tl.dot(ds, x.to(tl.float32), dqk, input_precision="ieee")
        tl.store(
            DX + b * sgb + rn[:, None] * sgn + rc[None, :] * sgc,
            dx.to(DX.dtype.element_ty),
            mask=mask_nc,
        )
    tl.store(DQK + b * K * C + rk[:, None] * C + rc[None, :], dqk, mask=mask_kc)


def config(c: int, k: int, dtype: torch.dtype, interpret: bool = INTERPRET) -> dict:
    """Tile sizes: channel tiles of up to 512 (256 in fp32) keep the backward's shared memory
    under Hopper's 227 KB per block (checked by tests/compile_sm90.py in the GPU check's
    dry run)."""
    lowp = dtype in (torch.bfloat16, torch.float16)
    return dict(
        BLOCK_N=BLOCK_N,
        BLOCK_C=min(next_pow2(c), 512 if lowp else 256),
        BLOCK_K=next_pow2(k),
        LOWP=lowp and not interpret,
    )


def pool_fwd(x: torch.Tensor, qk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, c = x.shape
    k = qk.shape[0]
    qk = qk.float().contiguous()
    out = torch.empty(b, k, c, device=x.device, dtype=x.dtype)
    lse = torch.empty(b, k, device=x.device, dtype=torch.float32)
    if b == 0:
        return out, lse
    cfg = config(c, k, x.dtype)
    _fwd_kernel[(b, triton.cdiv(c, cfg["BLOCK_C"]))](
        x, qk, out, lse, n, c, k, *x.stride(), *out.stride(), **cfg
    )
    return out, lse


def pool_bwd(
    dout: torch.Tensor, x: torch.Tensor, qk: torch.Tensor, delta: torch.Tensor, lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, c = x.shape
    k = qk.shape[0]
    qk = qk.float().contiguous()
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    partial = torch.empty(b, k, c, device=x.device, dtype=torch.float32)
    if b == 0:
        return dx, partial.sum(0)
    cfg = config(c, k, x.dtype)
    _bwd_kernel[(b, triton.cdiv(c, cfg["BLOCK_C"]))](
        x,
        qk,
        dout,
        delta.contiguous(),
        lse.contiguous(),
        dx,
        partial,
        n,
        c,
        k,
        *x.stride(),
        *dout.stride(),
        *dx.stride(),
        **cfg,
    )
    return dx, partial.sum(0)
