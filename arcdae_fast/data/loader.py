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
from typing import Any

import torch

from ..config import DataConfig
from . import synthetic
from ._prepare_worker import CELEBA_CROP_BOX
from .datasets import (
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
    if cfg.dataset == "prepared":
        return prepared_dataset(root, cfg.resolution, cfg.split)
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


def make_loader(
    dataset: ImageDataset,
    cfg: DataConfig,
    batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
) -> tuple[Any, str]:
    """The input pipeline data.loader asks for: (iterable of batches, description). auto:
    DALI when importable (GPU decoding on CUDA), else the torch DataLoader."""
    from .dali import DaliLoader, dali_available

    device = torch.device(device)
    use_dali = cfg.loader == "dali" or (cfg.loader == "auto" and dali_available() is None)
    if use_dali:
        loader = DaliLoader(
            dataset,
            batch_size,
            seed=seed,
            start_step=start_step,
            flip=cfg.flip,
            rank=rank,
            world_size=world_size,
            device=device,
            num_threads=max(1, cfg.num_workers),
            prefetch=cfg.prefetch,
            channels_last=cfg.channels_last,
            output=cfg.dali_output,
        )
        where = "GPU (nvJPEG)" if device.type == "cuda" else "CPU"
        return loader, f"DALI, decoding on the {where}"
    why = "" if cfg.loader == "torch" else f" ({dali_available()})"
    return build_loader(
        dataset,
        cfg,
        batch_size,
        seed=seed,
        start_step=start_step,
        rank=rank,
        world_size=world_size,
        pin_memory=device.type == "cuda",
    ), (f"torch DataLoader + PIL{why}")


def prepared_dataset(root: Path, resolution: int, split: str) -> ImageDataset:
    """The output of `python -m arcdae_fast.data.prepare` (its manifest lists the images)."""
    import json

    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise DataError(
            f"{root} is not a prepared dataset (no {manifest.name}); write one with "
            f"`python -m arcdae_fast.data.prepare --src SRC --out {root} --size N`"
        )
    if (root / "list_attr_celeba.txt").is_file():  # a prepared CelebA-layout dataset
        return celeba_format(root, resolution, split)
    entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    if not entries:
        raise DataError(f"{manifest} lists no images")
    return ImageDataset([root / e["file"] for e in entries], resolution)


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


def model_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Batch images as the model takes them: float in [-1, 1] on `device` (uint8 batches are
    converted there), channels_last memory when asked."""
    x = images.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
