"""Tiled InfoNCE kernels (SPEC section 4). Never materialize the N x N logits.

Logits are s_ij = <q_i, k_j> * inv_q_i * inv_k_j * scale (inv_* = 1/||.|| when normalizing,
else 1; scale = 1/temperature), computed tile by tile from the raw inputs.

- `lse_rows`: row log-sum-exp with an online max/sum over key tiles.
- `grad_rows`: dQn_i = scale * sum_j ds_ij * inv_k_j * k_j with
  ds_ij = c_own_i exp(s_ij - lse_own_i) + c_other_j exp(s_ij - lse_other_j),
  recomputing the logit tiles from the saved LSEs. Called with (q, k) it gives the query
  gradient; with the roles swapped, the key gradient (the symmetric form uses both terms).
The diagonal (positive-pair) terms and the normalization backward are O(N*D) and done by the
op in PyTorch.
"""

import torch
import triton
import triton.language as tl

from . import INTERPRET, next_pow2

BLOCK_M, BLOCK_N = 64, 64


@triton.jit
def _logits_tile(
    Q,
    K,
    rm,
    rn,
    mask_m,
    mask_n,
    D,
    sqm,
    sqd,
    skn,
    skd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    LOWP: tl.constexpr,
):
    """Raw dot products q_i . k_j for a (BLOCK_M, BLOCK_N) tile, float32 accumulation."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_DK):
        rd = d0 + tl.arange(0, BLOCK_DK)
        mask_d = rd < D
        q = tl.load(
            Q + rm[:, None] * sqm + rd[None, :] * sqd,
            mask=mask_m[:, None] & mask_d[None, :],
            other=0.0,
        )
        k = tl.load(
            K + rn[:, None] * skn + rd[None, :] * skd,
            mask=mask_n[:, None] & mask_d[None, :],
            other=0.0,
        )
        if LOWP:  # bf16/fp16 operands straight into the tensor cores (exact products)
            acc = tl.dot(q, tl.trans(k), acc)
        else:  # fp32 inputs, or any input under the interpreter: true fp32 products
            acc = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), acc, input_precision="ieee")
    return acc


@triton.jit
def _lse_kernel(
    Q,
    K,
    INV_Q,
    INV_K,
    LSE,
    N,
    D,
    sqm,
    sqd,
    skn,
    skd,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    LOWP: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rm < N
    inv_q = tl.load(INV_Q + rm, mask=mask_m, other=0.0) * scale
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        mask_n = rn < N
        inv_k = tl.load(INV_K + rn, mask=mask_n, other=0.0)
        s = _logits_tile(
            Q, K, rm, rn, mask_m, mask_n, D, sqm, sqd, skn, skd, BLOCK_M, BLOCK_N, BLOCK_DK, LOWP
        )
        s = s * inv_q[:, None] * inv_k[None, :]
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m_i = m_new
    tl.store(LSE + rm, m_i + tl.log(l_i), mask=mask_m)


@triton.jit
def _grad_kernel(
    Q,
    K,
    INV_Q,
    INV_K,
    LSE_OWN,
    C_OWN,
    LSE_OTHER,
    C_OTHER,
    DQN,
    N,
    D,
    sqm,
    sqd,
    skn,
    skd,
    sdm,
    sdd,
    scale,
    HAS_OWN: tl.constexpr,
    HAS_OTHER: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DO: tl.constexpr,
    LOWP: tl.constexpr,
):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ro = tl.program_id(1) * BLOCK_DO + tl.arange(0, BLOCK_DO)  # output feature chunk
    mask_m = rm < N
    mask_o = ro < D
    inv_q = tl.load(INV_Q + rm, mask=mask_m, other=0.0) * scale
    if HAS_OWN:
        lse_own = tl.load(LSE_OWN + rm, mask=mask_m, other=0.0)
        c_own = tl.load(C_OWN + rm, mask=mask_m, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        mask_n = rn < N
        inv_k = tl.load(INV_K + rn, mask=mask_n, other=0.0)
        s = _logits_tile(
            Q, K, rm, rn, mask_m, mask_n, D, sqm, sqd, skn, skd, BLOCK_M, BLOCK_N, BLOCK_DK, LOWP
        )
        s = s * inv_q[:, None] * inv_k[None, :]
        ds = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if HAS_OWN:
            ds += c_own[:, None] * tl.exp(s - lse_own[:, None])
        if HAS_OTHER:
            lse_o = tl.load(LSE_OTHER + rn, mask=mask_n, other=0.0)
            c_o = tl.load(C_OTHER + rn, mask=mask_n, other=0.0)
            ds += c_o[None, :] * tl.exp(s - lse_o[None, :])
        ds = tl.where(mask_m[:, None] & mask_n[None, :], ds * inv_k[None, :], 0.0)
        k = tl.load(
            K + rn[:, None] * skn + ro[None, :] * skd,
            mask=mask_n[:, None] & mask_o[None, :],
            other=0.0,
        )
        if LOWP:
            acc = tl.dot(ds.to(k.dtype), k, acc)
        else:
            acc = tl.dot(ds, k.to(tl.float32), acc, input_precision="ieee")
    tl.store(
        DQN + rm[:, None] * sdm + ro[None, :] * sdd,
        acc * scale,
        mask=mask_m[:, None] & mask_o[None, :],
    )


def config(d: int, dtype: torch.dtype, interpret: bool = INTERPRET) -> dict:
    """Tile sizes: 64 x 64 logit tiles, feature chunks of up to 128."""
    lowp = dtype in (torch.bfloat16, torch.float16) and not interpret
    return dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_DK=min(next_pow2(d), 128), LOWP=lowp)


def lse_rows(
    q: torch.Tensor, k: torch.Tensor, inv_q: torch.Tensor, inv_k: torch.Tensor, scale: float
) -> torch.Tensor:
    """(N,) float32 logsumexp_j s_ij. q, k: (N, D) any strides; inv_*: (N,) float32."""
    n, d = q.shape
    lse = torch.empty(n, device=q.device, dtype=torch.float32)
    _lse_kernel[(triton.cdiv(n, BLOCK_M),)](
        q, k, inv_q, inv_k, lse, n, d, *q.stride(), *k.stride(), scale, **config(d, q.dtype)
    )
    return lse


def grad_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    inv_q: torch.Tensor,
    inv_k: torch.Tensor,
    scale: float,
    lse_own: torch.Tensor | None,
    c_own: torch.Tensor | None,
    lse_other: torch.Tensor | None,
    c_other: torch.Tensor | None,
) -> torch.Tensor:
    """(N, D) float32 gradient w.r.t. the normalized rows of q, without the diagonal term."""
    n, d = q.shape
    out = torch.empty(n, d, device=q.device, dtype=torch.float32)
    cfg = config(d, q.dtype)
    dummy = inv_q  # never read when the matching HAS_* flag is off
    _grad_kernel[(triton.cdiv(n, BLOCK_M), triton.cdiv(d, cfg["BLOCK_DK"]))](
        q,
        k,
        inv_q,
        inv_k,
        dummy if lse_own is None else lse_own,
        dummy if c_own is None else c_own,
        dummy if lse_other is None else lse_other,
        dummy if c_other is None else c_other,
        out,
        n,
        d,
        *q.stride(),
        *k.stride(),
        *out.stride(),
        scale,
        HAS_OWN=lse_own is not None,
        HAS_OTHER=lse_other is not None,
        BLOCK_DO=cfg["BLOCK_DK"],
        **cfg,
    )
    return out
