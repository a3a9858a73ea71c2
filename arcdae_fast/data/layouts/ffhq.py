"""FFHQ: the PNGs under data.root, any depth (NVlabs' numbered subfolders); no official
split."""

from __future__ import annotations

from ...config.schema import DataConfig
from ..datasets import ImageDataset, list_images
from ..layout import register, root_of

FFHQ_HELP = (
    "FFHQ is not downloaded automatically. Get it from "
    "https://github.com/NVlabs/ffhq-dataset (the 'thumbnails128x128' folder for 128 px "
    "training, or 'images1024x1024'), keep its layout (numbered subfolders 00000/, "
    "01000/, ... holding the PNGs) and set data.root to that folder, e.g. "
    "`python -m arcdae_fast.train --config ffhq.yaml data.root=/data/ffhq/thumbnails128x128`."
)


@register("ffhq", help=FFHQ_HELP)
def ffhq(cfg: DataConfig) -> ImageDataset:
    return ImageDataset(list_images(root_of(cfg, FFHQ_HELP), FFHQ_HELP), cfg.resolution)
