"""The output of `python -m arcdae_fast.data.prepare`: manifest.jsonl lists the images; a
prepared CelebA keeps CelebA's files (attributes, the official split)."""

from __future__ import annotations

import json
from pathlib import Path

from ...config.schema import DataConfig
from ..datasets import DataError, ImageDataset
from ..layout import register, root_of
from .celeba import celeba_format


def has_split(cfg: DataConfig) -> bool:
    return bool(cfg.root) and (Path(cfg.root).expanduser() / "list_eval_partition.txt").is_file()


@register("prepared", partition=has_split)
def prepared(cfg: DataConfig) -> ImageDataset:
    return prepared_dataset(root_of(cfg), cfg.resolution, cfg.split)


def prepared_dataset(root: Path, resolution: int, split: str) -> ImageDataset:
    """The output of `python -m arcdae_fast.data.prepare` (its manifest lists the images)."""
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
