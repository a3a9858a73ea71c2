"""FID (Heusel et al. 2017): Inception-V3 pool features (2048-d), their mean and covariance
accumulated in float64 over batches, and the Frechet distance between two such Gaussians:

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

The network is torch-fidelity's port of the TF Inception graph (the one pytorch-fid and
torch-fidelity report FID with), weights from a local file (nn/weights.py). The matrix
square root is scipy's `sqrtm`, with pytorch-fid's treatment of a singular product (a small
multiple of I added) and of a numerically complex result. Reference statistics of a dataset
are cached by `reference_stats` (keyed by the files, resolution and count).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from ..checkpoint import atomic_write
from ..images import as_rgb
from ..nn.weights import INCEPTION
from ..once import exclusive

Features = Callable[[torch.Tensor], torch.Tensor]  # images (B, 3, H, W) in [-1, 1] -> (B, D)


class Stats:
    """Running mean and covariance of feature rows, in float64."""

    def __init__(self) -> None:
        self.n, self.sum, self.outer = 0, None, None

    def add(self, feats: torch.Tensor) -> None:
        f = feats.detach().to("cpu", torch.float64).reshape(feats.shape[0], -1)
        if self.sum is None:
            self.sum, self.outer = f.sum(0), f.T @ f
        else:
            self.sum += f.sum(0)
            self.outer += f.T @ f
        self.n += f.shape[0]

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 samples, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu.numpy(), cov.numpy()


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)), the last trace as the sum of
    the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2) (symmetric, PSD: the same
    eigenvalues as S1 S2), by two symmetric eigendecompositions: equal to pytorch-fid's
    scipy.linalg.sqrtm form, about 10x faster at 2048-d and defined for singular
    covariances (fewer samples than dimensions)."""
    diff = mu1 - mu2
    w, v = linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = linalg.eigvalsh(root @ s2 @ root)
    tr_covmean = np.sqrt(np.clip(lam, 0, None)).sum()
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def stats_of(batches: Iterable[torch.Tensor], features: Features) -> Stats:
    st = Stats()
    for x in batches:
        st.add(features(x))
    return st


def fid(a: Stats, b: Stats) -> float:
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


# ---- the Inception network -------------------------------------------------------------------
def _inception_class() -> type:
    """torch-fidelity's FeatureExtractorInceptionV3. Its package __init__ imports torchvision
    (for datasets and other extractors), which is not installed beside this CPU torch; the
    Inception module itself needs only torch, so without torchvision it is imported without
    running the package __init__."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ImportError(
            "FID needs torch-fidelity (pip install --no-deps torch-fidelity==0.4.0; the Makefile "
            "installs it)"
        )
    name = "torch_fidelity.feature_extractor_inceptionv3"
    if "torch_fidelity" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        spec = importlib.util.find_spec("torch_fidelity")
        sys.modules["torch_fidelity"] = importlib.util.module_from_spec(spec)
    return importlib.import_module(name).FeatureExtractorInceptionV3


def inception(weights_dir: str | None = None, device: torch.device | str = "cpu") -> Features:
    """images in [-1, 1] -> the 2048-d pool features (torch-fidelity resizes to 299 itself)."""
    path = INCEPTION.find(weights_dir)
    net = _inception_class()("inception-v3-compat", ["2048"], feature_extractor_weights_path=path)
    return features_of(net.to(device).eval())


def features_of(net: torch.nn.Module) -> Features:
    """A torch-fidelity feature extractor (uint8 images in) as `Features`."""

    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        u8 = ((as_rgb(x).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return net(u8)[0].reshape(x.shape[0], -1)

    return run


def cache_key(files: list[str], resolution: int, count: int, what: str) -> str:
    h = hashlib.sha256(json.dumps([what, resolution, count, files]).encode()).hexdigest()
    return h[:16]


def reference_stats(
    cache_dir: Path, key: str, compute: Callable[[], Stats]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mu, cov, from_cache) of a reference set, computed once and kept in cache_dir."""
    path = Path(cache_dir) / f"fid_ref_{key}.npz"
    with exclusive(path):  # ranks or jobs sharing the cache: one computes, the others read
        if path.is_file():
            with np.load(path) as f:
                return f["mu"], f["cov"], True
        return (*_compute_stats(path, compute), False)


def _compute_stats(path: Path, compute: Callable[[], Stats]) -> tuple[np.ndarray, np.ndarray]:
    mu, cov = compute().mean_cov()
    atomic_write(path, lambda f: np.savez(f, mu=mu, cov=cov), "the FID reference statistics")
    return mu, cov
