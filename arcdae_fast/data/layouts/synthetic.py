"""The bundled synthetic faces (data/synthetic.py), written on first use to data.root or
data/synthetic_faces_<synthetic_size>, in CelebA's layout with its official split."""

from __future__ import annotations

from pathlib import Path

from ...config.schema import DataConfig
from .. import synthetic as generator
from ..datasets import ImageDataset
from ..layout import register
from .celeba import celeba_format


def default_root(cfg: DataConfig) -> Path:
    return Path(cfg.root) if cfg.root else Path("data") / f"synthetic_faces_{cfg.synthetic_size}"


@register("synthetic", partition=True, needs_root=False)
def synthetic(cfg: DataConfig) -> ImageDataset:
    root = default_root(cfg)
    generator.generate(root, cfg.synthetic_count, cfg.synthetic_size)
    return celeba_format(root, cfg.resolution, cfg.split)
