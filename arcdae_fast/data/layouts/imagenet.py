"""ImageNet's class-folder layout (any class-labelled image tree laid out the same way):
ROOT/train/<class>/* and ROOT/val/<class>/*; the class index is the folder's place in the
sorted list of train/'s folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config.schema import DataConfig
from ..datasets import DataError, ImageDataset, list_images
from ..layout import register, root_of

IMAGENET_HELP = (
    "ImageNet is not downloaded automatically. Get ILSVRC-2012 (https://image-net.org) and lay "
    "it out with class subfolders: ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (the "
    "validation images sorted into their classes, e.g. with the common valprep.sh), then set "
    "data.root=ROOT."
)


@register("imagenet", partition=True, help=IMAGENET_HELP)
def imagenet(cfg: DataConfig) -> ImageDataset:
    return class_folders(root_of(cfg, IMAGENET_HELP), cfg.resolution, cfg.split)


def class_folders(root: Path, resolution: int, split: str) -> ImageDataset:
    """ImageNet's layout: ROOT/train/<class>/* and ROOT/val/<class>/* (split train: train;
    valid and test: val; all: both)."""
    parts = {"train": ("train",), "valid": ("val",), "test": ("val",), "all": ("train", "val")}
    files: list[Path] = []
    names: list[str] = []
    for part in parts[split]:
        folder = Path(root) / part
        if not folder.is_dir():
            raise DataError(f"expected the folder {folder} (ImageNet layout). {IMAGENET_HELP}")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{folder} has no class subfolders. {IMAGENET_HELP}")
        names = names or classes
        if classes != names:
            raise DataError(f"{folder} has other class folders than {parts[split][0]}/")
        files += list_images(folder, IMAGENET_HELP)
    index = {c: i for i, c in enumerate(names)}
    labels = np.array([index[f.relative_to(root).parts[1]] for f in files], dtype=np.int64)
    return ImageDataset(files, resolution, labels=labels, class_names=names)
