"""Any image tree under data.root (.jpg, .jpeg, .png at any depth); no labels, no official
split."""

from __future__ import annotations

from ...config.schema import DataConfig
from ..datasets import ImageDataset, list_images
from ..layout import register, root_of


@register("folder")
def folder(cfg: DataConfig) -> ImageDataset:
    return ImageDataset(list_images(root_of(cfg)), cfg.resolution)
