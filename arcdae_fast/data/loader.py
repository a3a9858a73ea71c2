"""Build the training dataset and its input pipeline (DALI or the PyTorch DataLoader) from the
`data` config section. Both pipelines take their batches from `ResumableBatchSampler`
(sampler.py), so they deliver the same batches and resume exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import DataConfig
from . import arrays, dali, lifeline, synthetic
from ._prepare_worker import CELEBA_CROP_BOX
from .annotated import CELEBAHQ_HELP, LFW_HELP, celebahq_format, lfw_format
from .datasets import (
    CELEBA_HELP,
    FFHQ_HELP,
    IMAGENET_HELP,
    DataError,
    ImageDataset,
    celeba_format,
    class_folders,
    collate,
    list_images,
)
from .sampler import ResumableBatchSampler


def default_root(cfg: DataConfig) -> Path:
    return Path(cfg.root) if cfg.root else Path("data") / f"synthetic_faces_{cfg.synthetic_size}"


def build_dataset(cfg: DataConfig) -> ImageDataset:
    """The dataset named by cfg.dataset (the bundled one generated on first use), decoding
    with data.max_image_pixels as its limit."""
    ds = _build_dataset(cfg)
    ds.max_pixels = cfg.max_image_pixels
    return ds


def _build_dataset(cfg: DataConfig) -> ImageDataset:
    if cfg.dataset == "synthetic":
        root = default_root(cfg)
        synthetic.generate(root, cfg.synthetic_count, cfg.synthetic_size)
        return celeba_format(root, cfg.resolution, cfg.split)
    if cfg.dataset == "fashion_mnist":
        return arrays.fashion_mnist(cfg.root, cfg.resolution, cfg.split)
    if cfg.dataset == "cifar10":
        return arrays.cifar10(cfg.root, cfg.resolution, cfg.split)
    if not cfg.root:
        help_text = {
            "ffhq": FFHQ_HELP,
            "celeba": CELEBA_HELP,
            "celebahq": CELEBAHQ_HELP,
            "lfw": LFW_HELP,
            "imagenet": IMAGENET_HELP,
        }.get(cfg.dataset, "")
        raise DataError(
            f"data.root is not set for data.dataset={cfg.dataset!r}. {help_text}".strip()
        )
    root = Path(cfg.root).expanduser()
    if cfg.dataset == "prepared":
        return prepared_dataset(root, cfg.resolution, cfg.split)
    if cfg.dataset == "celebahq":
        return celebahq_format(root, cfg.resolution)
    if cfg.dataset == "lfw":
        return lfw_format(root, cfg.resolution)
    if cfg.dataset == "imagenet":
        return class_folders(root, cfg.resolution, cfg.split)
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
    device = torch.device(device)
    if isinstance(dataset, arrays.ArrayDataset):
        if cfg.loader == "dali":
            raise DataError(
                f"data.loader=dali reads image files; data.dataset={cfg.dataset!r} is held in "
                "memory as arrays: use data.loader=torch (or auto)"
            )
        return build_loader(
            dataset,
            cfg,
            batch_size,
            seed=seed,
            start_step=start_step,
            rank=rank,
            world_size=world_size,
            pin_memory=device.type == "cuda",
        ), "torch DataLoader (in-memory arrays)"
    use_dali = cfg.loader == "dali" or (cfg.loader == "auto" and dali.dali_available() is None)
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


def has_partition(cfg: DataConfig) -> bool:
    """Whether the dataset carries an official train/valid/test split (CelebA's layout;
    ImageNet's train/val)."""
    if cfg.dataset in ("synthetic", "celeba", "imagenet", "fashion_mnist", "cifar10"):
        return True
    return (
        cfg.dataset == "prepared"
        and bool(cfg.root)
        and (Path(cfg.root).expanduser() / "list_eval_partition.txt").is_file()
    )


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
