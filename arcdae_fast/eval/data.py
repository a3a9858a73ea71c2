"""The evaluation splits of a dataset: the official train/valid/test split where the dataset
has one (CelebA's layout: CelebA, the bundled faces, prepared CelebA), else a seeded 80/10/10
split (FFHQ, CelebA-HQ, LFW, image folders), the same for every run given eval.split_seed."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config.schema import DataConfig
from ..data.datasets import ImageDataset
from ..data.loader import build_dataset, has_partition

SPLIT_SHARES = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


def seeded_split(n: int, split: str, seed: int) -> np.ndarray:
    """Indices of `split` in a seeded permutation of n items (80/10/10; "all": every one)."""
    if split == "all":
        return np.arange(n)
    lo, hi = SPLIT_SHARES[split]
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[round(lo * n) : round(hi * n)])


def split_dataset(cfg: DataConfig, split: str, seed: int, limit: int = 0) -> ImageDataset:
    """The images of one split (at most `limit`, the first ones, when limit > 0)."""
    if has_partition(cfg):
        ds = build_dataset(dataclasses.replace(cfg, split=split))
    else:
        full = build_dataset(dataclasses.replace(cfg, split="all"))
        ds = full.subset(seeded_split(len(full), split, seed))
    if limit and len(ds) > limit:
        ds = ds.subset(np.arange(limit))
    return ds
