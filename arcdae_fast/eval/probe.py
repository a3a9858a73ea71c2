"""Linear probes on frozen codes (SPEC section 6, DiTi's protocol, reused by DBAE).

Attribute probe: codes standardised with the training split's mean and std, Linear(d_z, A),
BCE with logits, Adam (lr 1e-3), 15 epochs, batch 128; the epoch with the best validation
mean average precision is kept, and the test set's per-attribute AP (scikit-learn's
`average_precision_score`) and their mean are reported. `label_fraction` trains on that
fraction of the training split (a seeded subset: the "1% labels" setting).

Regression probe: the same on continuous targets (LFW's 73 attributes, the bundled data's
factors), targets standardised with the training split's statistics, MSE loss; the epoch with
the best validation mean Pearson r (scipy) is kept; the test set's per-target Pearson r and
MSE (on the standardised targets) and their means are reported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.metrics import average_precision_score
from torch import nn


@dataclass
class ProbeSettings:
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 128
    label_fraction: float = 1.0
    seed: int = 0


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return [(x - mu) / sd for x in (train, *others)]


def mean_ap(y: np.ndarray, scores: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean over attributes of sklearn's AP; an attribute with no positive is left out (None)."""
    aps = [
        float(average_precision_score(y[:, a], scores[:, a])) if y[:, a].any() else None
        for a in range(y.shape[1])
    ]
    valid = [v for v in aps if v is not None]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def mean_pearson(y: np.ndarray, pred: np.ndarray) -> tuple[float, list[float | None]]:
    rs = []
    for a in range(y.shape[1]):
        if np.std(y[:, a]) < 1e-12 or np.std(pred[:, a]) < 1e-12:
            rs.append(None)
        else:
            rs.append(float(pearsonr(y[:, a], pred[:, a]).statistic))
    valid = [r for r in rs if r is not None]
    return (float(np.mean(valid)) if valid else float("nan")), rs


def _fit(
    z: tuple[np.ndarray, np.ndarray, np.ndarray],
    y: tuple[np.ndarray, np.ndarray, np.ndarray],
    loss_fn: nn.Module,
    score,
    s: ProbeSettings,
) -> tuple[int, np.ndarray, float, nn.Linear]:
    """Train Linear(d, A) on z[0] -> y[0]; the best epoch on the validation score; returns
    (best epoch, test predictions at it, best validation score, the Linear at it)."""
    g = torch.Generator().manual_seed(s.seed)
    ztr, yv = (torch.from_numpy(a).float() for a in (z[0], y[0]))
    n_keep = max(1, round(s.label_fraction * len(ztr)))
    keep = torch.randperm(len(ztr), generator=g)[:n_keep]
    ztr, yv = ztr[keep], yv[keep]
    lin = nn.Linear(ztr.shape[1], yv.shape[1])
    with torch.no_grad():  # the seeded generator, not the global RNG
        bound = 1 / np.sqrt(ztr.shape[1])
        lin.weight.uniform_(-bound, bound, generator=g)
        lin.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.Adam(lin.parameters(), lr=s.lr)
    zval, ztest = (torch.from_numpy(a).float() for a in (z[1], z[2]))
    best = (-np.inf, 0, None, None)
    for epoch in range(1, s.epochs + 1):
        perm = torch.randperm(len(ztr), generator=g)
        for i in range(0, len(ztr), s.batch_size):
            idx = perm[i : i + s.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(lin(ztr[idx]), yv[idx]).backward()
            opt.step()
        with torch.no_grad():
            val = score(y[1], lin(zval).numpy())
            if val > best[0]:
                best = (val, epoch, lin(ztest).numpy(), copy.deepcopy(lin))
    return best[1], best[2], float(best[0]), best[3]


def attribute_probe(
    z: tuple[np.ndarray, np.ndarray, np.ndarray],
    y: tuple[np.ndarray, np.ndarray, np.ndarray],
    names: list[str],
    settings: ProbeSettings | None = None,
) -> dict:
    """z: codes of the (train, valid, test) splits; y: their binary labels (0/1 or -1/1)."""
    s = settings or ProbeSettings()
    yb = tuple((np.asarray(a) > 0).astype(np.float32) for a in y)
    zs = tuple(_standardise(*z))
    epoch, logits, val, _ = _fit(zs, yb, nn.BCEWithLogitsLoss(), lambda t, p: mean_ap(t, p)[0], s)
    m, aps = mean_ap(yb[2], logits)
    return {
        "mean_ap": m,
        "per_attribute": dict(zip(names, aps)),
        "best_epoch": epoch,
        "valid_mean_ap": val,
        "train_samples": max(1, round(s.label_fraction * len(z[0]))),
        "settings": vars(s),
    }


def regression_probe(
    z: tuple[np.ndarray, np.ndarray, np.ndarray],
    y: tuple[np.ndarray, np.ndarray, np.ndarray],
    names: list[str],
    settings: ProbeSettings | None = None,
) -> dict:
    """z: codes of (train, valid, test); y: continuous targets (N, T)."""
    s = settings or ProbeSettings()
    ys = tuple(a.astype(np.float32) for a in _standardise(*(np.asarray(t, np.float64) for t in y)))
    zs = tuple(_standardise(*z))
    epoch, pred, val, _ = _fit(zs, ys, nn.MSELoss(), lambda t, p: mean_pearson(t, p)[0], s)
    r, rs = mean_pearson(ys[2], pred)
    mse = ((pred - ys[2]) ** 2).mean(0)
    return {
        "mean_pearson_r": r,
        "mean_mse": float(mse.mean()),
        "per_target": {
            n: {"pearson_r": rr, "mse": float(e)} for n, rr, e in zip(names, rs, mse.tolist())
        },
        "best_epoch": epoch,
        "valid_mean_pearson_r": val,
        "settings": vars(s),
    }


def attribute_classifier(
    z: tuple[np.ndarray, np.ndarray],
    y: tuple[np.ndarray, np.ndarray],
    settings: ProbeSettings | None = None,
) -> tuple[nn.Linear, np.ndarray, np.ndarray]:
    """DiffAE's manipulation classifier: the attribute probe's Linear on standardised codes,
    fitted on z[0] (train), its epoch picked on z[1] (valid); returns (Linear, mean, std)
    of the standardisation (the train split's)."""
    s = settings or ProbeSettings()
    yb = tuple((np.asarray(a) > 0).astype(np.float32) for a in y)
    mu, sd = z[0].mean(0), z[0].std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    zs = tuple((a - mu) / sd for a in (z[0], z[1], z[1]))
    _, _, _, lin = _fit(
        zs, (yb[0], yb[1], yb[1]), nn.BCEWithLogitsLoss(), lambda t, p: mean_ap(t, p)[0], s
    )
    return lin, mu, sd
