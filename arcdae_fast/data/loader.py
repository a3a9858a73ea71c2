"""Build the training dataset and the PyTorch DataLoader from the `data` config section.

The batch order is a pure function of (seed, step): each epoch is a fresh permutation of the
dataset drawn from seed + epoch, cut into full global batches (the remainder of an epoch is
dropped, and a different one each epoch), so a resumed run sees exactly the batches it would
have seen without stopping. With world_size > 1 each rank takes its slice of every global
batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import DataConfig
from . import synthetic
from .datasets import (
    CELEBA_CROP_BOX,
    CELEBA_HELP,
    FFHQ_HELP,
    DataError,
    ImageDataset,
    celeba_format,
    collate,
    list_images,
)


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Yields lists of (index, flip) for steps start_step, start_step + 1, ... forever."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        start_step: int = 0,
        flip: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        global_batch = batch_size * world_size
        if n < global_batch:
            raise DataError(
                f"the dataset has {n} images, fewer than one global batch "
                f"(train.batch_size={batch_size} x {world_size} rank(s))"
            )
        self.n, self.batch, self.seed, self.start = n, batch_size, seed, start_step
        self.flip, self.rank, self.world = flip, rank, world_size
        self.per_epoch = n // global_batch

    def batch_at(self, step: int) -> list[tuple[int, bool]]:
        epoch, k = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        flips = torch.rand(self.n, generator=g) < 0.5
        lo = (k * self.world + self.rank) * self.batch
        idx = perm[lo : lo + self.batch]
        return [(int(i), bool(flips[i]) and self.flip) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        step = self.start
        while True:
            yield self.batch_at(step)
            step += 1

    def __len__(self) -> int:  # infinite stream; DataLoader only needs a number
        return 2**62


def default_root(cfg: DataConfig) -> Path:
    return Path(cfg.root) if cfg.root else Path("data") / f"synthetic_faces_{cfg.synthetic_size}"


def build_dataset(cfg: DataConfig) -> ImageDataset:
    """The dataset named by cfg.dataset; the bundled one is generated on first use."""
    if cfg.dataset == "synthetic":
        root = default_root(cfg)
        synthetic.generate(root, cfg.synthetic_count, cfg.synthetic_size)
        return celeba_format(root, cfg.resolution, cfg.split)
    if not cfg.root:
        help_text = {"ffhq": FFHQ_HELP, "celeba": CELEBA_HELP}.get(cfg.dataset, "")
        raise DataError(
            f"data.root is not set for data.dataset={cfg.dataset!r}. {help_text}".strip()
        )
    root = Path(cfg.root).expanduser()
    if cfg.dataset == "celeba":
        if not root.exists():
            raise DataError(f"data.root {str(root)!r} does not exist. {CELEBA_HELP}")
        return celeba_format(
            root,
            cfg.resolution,
            cfg.split,
            CELEBA_CROP_BOX if cfg.celeba_crop else None,
            CELEBA_HELP,
        )
    help_text = FFHQ_HELP if cfg.dataset == "ffhq" else ""
    return ImageDataset(list_images(root, help_text), cfg.resolution)


def build_loader(
    dataset: ImageDataset,
    cfg: DataConfig,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    sampler = ResumableBatchSampler(
        len(dataset),
        batch_size,
        seed=seed,
        start_step=start_step,
        flip=cfg.flip,
        rank=rank,
        world_size=world_size,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=2 if cfg.num_workers > 0 else None,
    )
