"""Linear probes on frozen codes (SPEC section 6). Codes are standardised with the training
split's mean and std; every regularisation strength is picked on the validation split, never
the test split.

eval.probe_protocol=converged (the default): full-batch L-BFGS to a gradient below 1e-4 of
scikit-learn's objective (mean loss + ||W||^2 / (2 C n), bias not penalised) for each C of
C_GRID, warm-started from the previous C.
- attributes (multi-label): one logistic regression per attribute (fitted jointly, as they
  share nothing); each attribute's C is the one with the best validation AP; test AP per
  attribute (scikit-learn's `average_precision_score`) and their mean.
- classes: multinomial logistic regression; C by validation top-1; test top-1 (and top-5 with
  more than 10 classes).
- continuous targets: ridge regression (closed form) on standardised targets, each target's
  alpha by validation Pearson r; test Pearson r and MSE.
eval.json records the chosen C / alpha per target and the fit's final gradient (the
convergence diagnostic).

eval.probe_protocol=diti: DiTi's attribute probe as its paper ran it: Linear + BCE, Adam
(eval.probe_lr), batches of eval.probe_batch_size, for the optimizer steps that
eval.probe_epochs epochs of CelebA's training split (162,770 images) take (15 epochs, batch
128: 19,080 steps) whatever the split's size; validation is scored at probe_epochs evenly
spaced points and the best one is kept. (Counting epochs of a small split instead is what
made the earlier probe stop far from converged: 195 steps on 1,638 images.)

k-NN (class labels): cosine similarity of L2-normalised codes, the k nearest training codes
vote with weight exp(sim / T) (k = 20, T = 0.07: the weighted k-NN of Wu et al. 2018 / DINO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.metrics import average_precision_score
from torch import nn

C_GRID = tuple(10.0**k for k in range(-4, 3))  # 1e-4 ... 1e2
ALPHA_GRID = tuple(10.0**k for k in range(-2, 7))  # 1e-2 ... 1e6 (sum-of-squares objective)
CELEBA_TRAIN = 162_770  # DiTi's probe ran its epochs over CelebA's training split
GRAD_TOL = 1e-4  # the converged fit stops when every gradient entry is below this


@dataclass
class ProbeSettings:
    protocol: str = "converged"
    label_fraction: float = 1.0
    seed: int = 0
    # the diti protocol
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 128


Splits = tuple[np.ndarray, np.ndarray, np.ndarray]  # (train, valid, test)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return [((x - mu) / sd).astype(np.float32) for x in (train, *others)]


def label_subset(n: int, s: ProbeSettings) -> np.ndarray:
    """The training rows a probe uses: all, or a seeded label_fraction of them."""
    n_keep = max(1, round(s.label_fraction * n))
    if n_keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(s.seed).permutation(n)[:n_keep])


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


# ---- the converged logistic fit ---------------------------------------------------------------
def logistic_fit(
    x: np.ndarray,
    y: np.ndarray,
    c: float,
    multiclass: bool,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """min mean loss + ||W||^2 / (2 C n) by full-batch L-BFGS (scikit-learn's objective
    divided by C n). x (n, d) standardised; y (n, A) 0/1 (BCE per column) or (n,) class
    indices (softmax over n_classes = y.max() + 1 or init's width). Returns (W (d, k), b (k,),
    {"iterations", "max_grad"})."""
    xt = torch.from_numpy(x).double()
    yt = torch.from_numpy(y).long() if multiclass else torch.from_numpy(y).double()
    k = (int(y.max()) + 1 if init is None else init[0].shape[1]) if multiclass else y.shape[1]
    w = (
        init[0].clone() if init else torch.zeros(x.shape[1], k, dtype=torch.float64)
    ).requires_grad_()
    b = (init[1].clone() if init else torch.zeros(k, dtype=torch.float64)).requires_grad_()
    n, penalty = len(x), 1.0 / (2.0 * c * len(x))
    loss_fn = nn.CrossEntropyLoss() if multiclass else nn.BCEWithLogitsLoss(reduction="sum")
    scale = 1.0 if multiclass else 1.0 / n
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=GRAD_TOL,
        tolerance_change=1e-15,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective():
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(xt @ w + b, yt) * scale + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(objective)
    objective()  # the gradient at the end point: the convergence diagnostic
    grad = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return w.detach(), b.detach(), {"iterations": iters, "max_grad": grad}


def _scores(x: np.ndarray, w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (torch.from_numpy(x).double() @ w + b).numpy()


def _c_path(xtr, ytr, multiclass: bool, k: int | None = None):
    """(C, W, b, diagnostic) for each C of C_GRID, each fit warm-started from the last."""
    init = None
    if multiclass:
        init = (
            torch.zeros(xtr.shape[1], k, dtype=torch.float64),
            torch.zeros(k, dtype=torch.float64),
        )
    for c in C_GRID:
        w, b, diag = logistic_fit(xtr, ytr, c, multiclass, init)
        init = (w, b)
        yield c, w, b, diag


def _diagnostic(diags: list[dict]) -> dict:
    worst = max(d["max_grad"] for d in diags)
    return {
        "max_grad": worst,
        "max_iterations": max(d["iterations"] for d in diags),
        "converged": worst <= 10 * GRAD_TOL,
    }


def _converged_attributes(zs: list[np.ndarray], yb: Splits) -> tuple[np.ndarray, dict]:
    """Per attribute the C with the best validation AP; (test scores, record)."""
    n_attr = yb[0].shape[1]
    best_val = np.full(n_attr, -np.inf)
    test = np.zeros((len(zs[2]), n_attr))
    chosen, diags = [None] * n_attr, [None] * n_attr
    for c, w, b, diag in _c_path(zs[0], yb[0], multiclass=False):
        _, val_aps = mean_ap(yb[1], _scores(zs[1], w, b))
        t = _scores(zs[2], w, b)
        for a, v in enumerate(val_aps):
            v = -np.inf if v is None else v
            if chosen[a] is None or v > best_val[a]:
                best_val[a], chosen[a], diags[a] = v, c, diag
                test[:, a] = t[:, a]
    valid = best_val[np.isfinite(best_val)]
    record = {
        "protocol": "converged",
        "c_per_attribute": chosen,
        "valid_mean_ap": float(valid.mean()) if valid.size else float("nan"),
        "convergence": _diagnostic([d for d in diags if d is not None]),
    }
    return test, record


# ---- DiTi's protocol --------------------------------------------------------------------------
def diti_steps(s: ProbeSettings) -> int:
    """The optimizer steps of s.epochs epochs of CelebA's training split at s.batch_size."""
    return math.ceil(s.epochs * CELEBA_TRAIN / s.batch_size)


def _diti_fit(zs: list[np.ndarray], y: Splits, loss_fn: nn.Module, score, s: ProbeSettings):
    """Adam on Linear(d, A) for diti_steps(s) steps; validation scored at s.epochs evenly
    spaced points; (test predictions at the best one, record)."""
    g = torch.Generator().manual_seed(s.seed)
    ztr, ytr = torch.from_numpy(zs[0]), torch.from_numpy(y[0]).float()
    lin = nn.Linear(ztr.shape[1], ytr.shape[1])
    with torch.no_grad():  # the seeded generator, not the global RNG
        bound = 1 / np.sqrt(ztr.shape[1])
        lin.weight.uniform_(-bound, bound, generator=g)
        lin.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.Adam(lin.parameters(), lr=s.lr)
    zval, ztest = torch.from_numpy(zs[1]), torch.from_numpy(zs[2])
    total = diti_steps(s)
    checks = {round(total * (i + 1) / s.epochs): i + 1 for i in range(s.epochs)}
    best, perm, pos = (-np.inf, 0, None), torch.randperm(len(ztr), generator=g), 0
    for step in range(1, total + 1):
        if pos >= len(ztr):
            perm, pos = torch.randperm(len(ztr), generator=g), 0
        idx = perm[pos : pos + s.batch_size]
        pos += s.batch_size
        opt.zero_grad(set_to_none=True)
        loss_fn(lin(ztr[idx]), ytr[idx]).backward()
        opt.step()
        if step in checks:
            with torch.no_grad():
                val = score(y[1], lin(zval).numpy())
                if val > best[0]:
                    best = (val, checks[step], lin(ztest).numpy())
    record = {
        "protocol": "diti",
        "steps": total,
        "best_epoch": best[1],  # which of the s.epochs evenly spaced checks
        "valid_score": float(best[0]),
    }
    return best[2], record


# ---- the probes -------------------------------------------------------------------------------
def attribute_probe(
    z: Splits, y: Splits, names: list[str], settings: ProbeSettings | None = None
) -> dict:
    """z: codes of the (train, valid, test) splits; y: their binary labels (0/1 or -1/1)."""
    s = settings or ProbeSettings()
    keep = label_subset(len(z[0]), s)
    yb = tuple((np.asarray(a) > 0).astype(np.float32) for a in y)
    yb = (yb[0][keep], yb[1], yb[2])
    zs = _standardise(z[0][keep], z[1], z[2])
    if s.protocol == "diti":
        scores, record = _diti_fit(zs, yb, nn.BCEWithLogitsLoss(), lambda t, p: mean_ap(t, p)[0], s)
        record["valid_mean_ap"] = record.pop("valid_score")
    else:
        scores, record = _converged_attributes(zs, yb)
    m, aps = mean_ap(yb[2], scores)
    return {
        "mean_ap": m,
        "per_attribute": dict(zip(names, aps)),
        **record,
        "train_samples": len(keep),
        "settings": vars(s),
    }


def ridge_path(x: np.ndarray, y: np.ndarray, alphas=ALPHA_GRID):
    """(alpha, W (d, T)) of min ||y - x W||^2 + alpha ||W||^2 for each alpha (x and y
    centred), from one eigendecomposition of x^T x."""
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    evals, evecs = np.linalg.eigh(xd.T @ xd)
    proj = evecs.T @ (xd.T @ yd)
    for alpha in alphas:
        yield alpha, evecs @ (proj / (np.maximum(evals, 0.0) + alpha)[:, None])


def regression_probe(
    z: Splits, y: Splits, names: list[str], settings: ProbeSettings | None = None
) -> dict:
    """z: codes of (train, valid, test); y: continuous targets (N, T)."""
    s = settings or ProbeSettings()
    keep = label_subset(len(z[0]), s)
    ys = _standardise(*(np.asarray(t, np.float64) for t in (y[0][keep], y[1], y[2])))
    zs = _standardise(z[0][keep], z[1], z[2])
    if s.protocol == "diti":
        pred, record = _diti_fit(zs, ys, nn.MSELoss(), lambda t, p: mean_pearson(t, p)[0], s)
        record["valid_mean_pearson_r"] = record.pop("valid_score")
    else:
        n_t = ys[0].shape[1]
        best = np.full(n_t, -np.inf)
        pred, chosen = np.zeros_like(ys[2]), [None] * n_t
        for alpha, w in ridge_path(zs[0], ys[0]):
            _, val_rs = mean_pearson(ys[1], zs[1] @ w)
            test = zs[2] @ w
            for t, r in enumerate(val_rs):
                r = -np.inf if r is None else r
                if chosen[t] is None or r > best[t]:
                    best[t], chosen[t], pred[:, t] = r, alpha, test[:, t]
        valid = best[np.isfinite(best)]
        record = {
            "protocol": "converged",
            "alpha_per_target": chosen,
            "valid_mean_pearson_r": float(valid.mean()) if valid.size else float("nan"),
            "convergence": {"closed_form": True},
        }
    r, rs = mean_pearson(ys[2], pred)
    mse = ((pred - ys[2]) ** 2).mean(0)
    return {
        "mean_pearson_r": r,
        "mean_mse": float(mse.mean()),
        "per_target": {
            n: {"pearson_r": rr, "mse": float(e)} for n, rr, e in zip(names, rs, mse.tolist())
        },
        **record,
        "train_samples": len(keep),
        "settings": vars(s),
    }


def _topk(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def class_probe(
    z: Splits, y: Splits, n_classes: int, settings: ProbeSettings | None = None
) -> dict:
    """Linear evaluation: multinomial logistic regression on standardised codes, C by
    validation top-1; test top-1 (and top-5 when there are more than 10 classes)."""
    s = settings or ProbeSettings()
    keep = label_subset(len(z[0]), s)
    labels = tuple(np.asarray(a, np.int64) for a in (y[0][keep], y[1], y[2]))
    zs = _standardise(z[0][keep], z[1], z[2])
    best = None
    for c, w, b, diag in _c_path(zs[0], labels[0], multiclass=True, k=n_classes):
        val = _topk(_scores(zs[1], w, b), labels[1], 1)
        if best is None or val > best[0]:
            best = (val, c, _scores(zs[2], w, b), diag)
    val, c, test, diag = best
    out = {
        "top1": _topk(test, labels[2], 1),
        "valid_top1": val,
        "c": c,
        "convergence": _diagnostic([diag]),
        "protocol": "converged",
        "train_samples": len(keep),
        "label_fraction": s.label_fraction,
    }
    if n_classes > 10:
        out["top5"] = _topk(test, labels[2], 5)
    return out


def knn_probe(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_test: np.ndarray,
    y_test: np.ndarray,
    n_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Top-1 of the temperature-weighted cosine k-NN classifier (see the module text)."""
    bank = torch.nn.functional.normalize(torch.from_numpy(z_train).float(), dim=1)
    labels = torch.from_numpy(np.asarray(y_train, np.int64))
    k = min(k, len(bank))
    hits = 0
    for lo in range(0, len(z_test), chunk):
        q = torch.nn.functional.normalize(torch.from_numpy(z_test[lo : lo + chunk]).float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(q), n_classes).scatter_add_(
            1, labels[idx], (sim / temperature).exp()
        )
        hits += int((votes.argmax(1).numpy() == np.asarray(y_test[lo : lo + chunk])).sum())
    return hits / max(1, len(z_test))


def attribute_classifier(
    z: tuple[np.ndarray, np.ndarray],
    y: tuple[np.ndarray, np.ndarray],
    settings: ProbeSettings | None = None,
) -> tuple[nn.Linear, np.ndarray, np.ndarray]:
    """DiffAE's manipulation classifier for one attribute: the converged attribute probe on
    standardised codes fitted on z[0] (train), C picked on z[1] (valid); returns (Linear,
    mean, std) of the standardisation (the train split's)."""
    yb = tuple((np.asarray(a) > 0).astype(np.float32) for a in y)
    mu, sd = z[0].mean(0), z[0].std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    x = [((a - mu) / sd).astype(np.float32) for a in z]
    best = None
    for _, w, b, _ in _c_path(x[0], yb[0], multiclass=False):
        val = mean_ap(yb[1], _scores(x[1], w, b))[0]
        if best is None or val > best[0]:
            best = (val, w, b)
    lin = nn.Linear(x[0].shape[1], yb[0].shape[1])
    with torch.no_grad():
        lin.weight.copy_(best[1].T.float())
        lin.bias.copy_(best[2].float())
    return lin, mu, sd
