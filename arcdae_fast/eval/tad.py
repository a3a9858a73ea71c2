"""TAD and ATTRS (Yeats et al.'s disentanglement score as InfoDiffusion computes it,
isjakewong/InfoDiffusion eval_disentanglement.py; SPEC section 6).

For each binary attribute: the AUROC of every code dimension as a detector (the better of z
and -z); the gap between the best and the second-best dimension. An attribute counts when its
best AUROC is >= `threshold` (0.75) and it shares little information with any other
attribute: max_j MI(a_i; a_j) / H(a_i) <= `mi_threshold` (0.2; InfoDiffusion's filter, which
SPEC's summary leaves out; 1.0 turns it off). TAD = the sum of the counted gaps, ATTRS = how
many count. AUROC: scikit-learn's roc_auc_score.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc_matrix(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(A, D): per attribute and dimension, max(AUROC(z_d), AUROC(-z_d)); 0.5 for an
    attribute with one class."""
    out = np.full((y.shape[1], z.shape[1]), 0.5)
    for i in range(y.shape[1]):
        if len(np.unique(y[:, i])) < 2:
            continue
        for d in range(z.shape[1]):
            a = roc_auc_score(y[:, i], z[:, d])
            out[i, d] = max(a, 1.0 - a)  # AUROC(-z) = 1 - AUROC(z)
    return out


def shared_information(y: np.ndarray) -> np.ndarray:
    """(A,): max over j != i of MI(a_i; a_j) / H(a_i) for binary attributes (nats); inf for a
    constant attribute (never counted)."""
    n, a = y.shape
    mi = np.zeros((a, a))
    for i in range(a):
        for j in range(a):
            for u in (0, 1):
                for v in (0, 1):
                    pij = np.mean((y[:, i] == u) & (y[:, j] == v))
                    pi, pj = np.mean(y[:, i] == u), np.mean(y[:, j] == v)
                    if pij > 0 and pi > 0 and pj > 0:
                        mi[i, j] += pij * np.log(pij / (pi * pj))
    ent = np.diag(mi).copy()
    off = mi - np.diag(np.diag(mi))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ent > 0, off.max(axis=1) / np.where(ent > 0, ent, 1), np.inf)


def tad(
    z: np.ndarray,
    y: np.ndarray,
    names: list[str],
    threshold: float = 0.75,
    mi_threshold: float = 0.2,
) -> dict:
    """z (N, D) codes, y (N, A) binary labels (0/1 or -1/1)."""
    y = (np.asarray(y) > 0).astype(np.int64)
    au = auroc_matrix(np.asarray(z, dtype=np.float64), y)
    order = np.sort(au, axis=1)
    best, second = order[:, -1], order[:, -2] if au.shape[1] > 1 else np.full(len(au), 0.5)
    gap = best - second
    shared = shared_information(y)
    kept = (best >= threshold) & (shared <= mi_threshold)
    per = {
        n: {
            "best_auroc": float(b),
            "best_dim": int(np.argmax(au[i])),
            "gap": float(g),
            "shared_information": float(s),
            "counted": bool(k),
        }
        for i, (n, b, g, s, k) in enumerate(zip(names, best, gap, shared, kept))
    }
    return {
        "tad": float(gap[kept].sum()),
        "attrs": int(kept.sum()),
        "threshold": threshold,
        "mi_threshold": mi_threshold,
        "per_attribute": per,
    }
