"""SNR-weighted InfoNCE (SPEC section 4): the public op and its eager reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backends
from ._validate import check_choice, check_nonempty, check_positive, check_same, check_tensor

OP = "snr_weighted_infonce"
REDUCTIONS = ("mean", "sum", "none")
NORM_EPS = 1e-12  # x / max(||x||, eps), as F.normalize


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
    check_tensor(OP, "query", query, shape=("N", "D"))
    n, d = query.shape
    check_tensor(OP, "key", key, shape=(None, None), device=query.device)
    check_same(OP, "N (rows)", query=n, key=key.shape[0])
    check_same(OP, "D (feature size)", query=d, key=key.shape[1])
    check_nonempty(OP, "query", query, 0, "batch (N = 0 rows)")
    check_nonempty(OP, "query", query, 1, "feature dimension (D = 0)")
    if weight is not None:
        check_tensor(OP, "weight", weight, shape=(n,), device=query.device)
    temperature = check_positive(OP, "temperature", temperature)
    check_choice(OP, "reduction", reduction, REDUCTIONS)
    impl = _backends.resolve(OP, backend, query.device, query.dtype)
    return impl.fn(query, key, weight, temperature, bool(normalize), bool(symmetric), reduction)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def snr_weighted_infonce_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    weight: torch.Tensor | None,
    temperature: float,
    normalize: bool,
    symmetric: bool,
    reduction: str,
) -> torch.Tensor:
    """Eager ground truth: materializes the N x N logits."""
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


_backends.register(
    OP,
    "reference",
    snr_weighted_infonce_reference,
    priority={"cpu": 0, "cuda": 0, "mps": 0, "meta": 0},
    dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16),
)
