"""Build the training dataset and its input pipeline (DALI or the PyTorch DataLoader) from the
`data` config section. Both pipelines take their batches from `ResumableBatchSampler`
(sampler.py), so they deliver the same batches and resume exactly."""

from __future__ import annotations

from typing import Any

import torch

from ..config.schema import DataConfig
from . import dali, layout, layouts, lifeline  # noqa: F401  (layouts: the built-ins register)
from .arrays import ArrayDataset
from .datasets import DataError, ImageDataset, collate
from .sampler import ResumableBatchSampler


def build_dataset(cfg: DataConfig) -> ImageDataset:
    """The dataset data.dataset names (data/layouts/; the bundled one generated on first
    use), decoding with data.max_image_pixels as its limit."""
    found = layout.get(cfg.dataset)
    if found.needs_root:
        layout.root_of(cfg, found.help)  # data.root unset: the one error, with the help
    ds = found.build(cfg)
    if ds.channels != cfg.channels:
        raise DataError(
            f"data.channels={cfg.channels}: data.dataset={cfg.dataset!r} serves "
            f"{ds.channels}-channel images (one channel is for grey datasets: fashion_mnist)"
        )
    ds.max_pixels = cfg.max_image_pixels
    return ds


def has_partition(cfg: DataConfig) -> bool:
    """Whether the dataset carries an official train/valid/test split."""
    return layout.get(cfg.dataset).partition(cfg)


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
    device = torch.device(device)
    arrays = isinstance(dataset, ArrayDataset)
    if arrays and cfg.loader == "dali":
        raise DataError(
            f"data.loader=dali reads image files; data.dataset={cfg.dataset!r} is held in "
            "memory as arrays: use data.loader=torch (or auto)"
        )
    use_dali = not arrays and (
        cfg.loader == "dali" or (cfg.loader == "auto" and dali.dali_available() is None)
    )
    if use_dali:
        loader = dali.DaliLoader(
            dataset,
            batch_size,
            seed=seed,
            start_step=start_step,
            flip=cfg.flip,
            random_crop=cfg.crop == "random",
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
    why = "" if cfg.loader == "torch" else f" ({dali.dali_available()})"
    how = "torch DataLoader (in-memory arrays)" if arrays else f"torch DataLoader + PIL{why}"
    return build_loader(
        dataset,
        cfg,
        batch_size,
        seed=seed,
        start_step=start_step,
        rank=rank,
        world_size=world_size,
        pin_memory=device.type == "cuda",
    ), how


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
        random_crop=cfg.crop == "random",
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
        # workers start from a clean server process, not a fork of this one: a fork of a
        # process whose OpenMP / Inductor / DALI threads are running can crash in the child
        # (seen: a worker's segfault in CI after compiled tests in the same process)
        multiprocessing_context=lifeline.context() if cfg.num_workers > 0 else None,
        worker_init_fn=lifeline.worker_init if cfg.num_workers > 0 else None,
    )


def model_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Batch images as the model takes them: float in [-1, 1] on `device` (uint8 batches are
    converted there), channels_last memory when asked."""
    x = images.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
