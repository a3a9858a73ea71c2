"""Codes of a split: the method's `encode` on the evaluation weights (the EMA), with the
split's attributes and continuous targets."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ..data.datasets import ImageDataset, collate


@dataclass
class Codes:
    z: np.ndarray  # (N, D) float32
    attrs: np.ndarray | None  # (N, A), CelebA's -1/1
    factors: np.ndarray | None  # (N, F) continuous
    index: np.ndarray  # (N,) rows of the dataset kept (unreadable images left out)
    labels: np.ndarray | None = None  # (N,) class indices


def batches(
    ds: ImageDataset,
    batch_size: int,
    desc: str = "",
    progress: bool = False,
    num_workers: int = 0,
) -> Iterator[dict]:
    """The dataset in order, `batch_size` images at a time (unreadable ones dropped)."""
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate
    )
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        if "image" in batch:
            yield batch


@torch.no_grad()
def encode_split(
    method,
    nets: Mapping[str, torch.nn.Module],
    ds: ImageDataset,
    *,
    batch_size: int,
    device: torch.device,
    desc: str = "",
    progress: bool = False,
    **readout: object,
) -> Codes:
    """`readout`: keywords of the method's encode (e.g. DDAE++'s t and layer)."""
    zs, attrs, factors, index, labels = [], [], [], [], []
    for batch in batches(ds, batch_size, desc, progress):
        z = method.encode(batch["image"].to(device), nets, **readout)
        zs.append(z.float().reshape(z.shape[0], -1).cpu())
        index.append(batch["index"])
        if "attrs" in batch:
            attrs.append(batch["attrs"])
        if "factors" in batch:
            factors.append(batch["factors"])
        if "label" in batch:
            labels.append(batch["label"])
    if not zs:
        raise ValueError(f"no readable image in the split {desc!r}")
    cat = lambda xs: torch.cat(xs).numpy() if xs else None  # noqa: E731
    return Codes(cat(zs), cat(attrs), cat(factors), cat(index), cat(labels))
