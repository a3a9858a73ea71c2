"""CelebA's layout: img_align_celeba/ + list_attr_celeba.txt + list_eval_partition.txt (and,
for the bundled faces, list_factors.txt); the official split; DiffAE's 128 px centre crop
before resizing unless data.celeba_crop=false."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config.schema import DataConfig
from .._prepare_worker import CELEBA_CROP_BOX
from ..attrs import SPLITS, AnnotationError, read_partition, read_table
from ..datasets import DataError, ImageDataset, list_images
from ..layout import register, root_of

CELEBA_HELP = (
    "CelebA is not downloaded automatically. Get it from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and lay it out as "
    "ROOT/img_align_celeba/*.jpg, ROOT/list_attr_celeba.txt and "
    "ROOT/list_eval_partition.txt, then set data.root=ROOT."
)


@register("celeba", partition=True, help=CELEBA_HELP)
def celeba(cfg: DataConfig) -> ImageDataset:
    root = root_of(cfg, CELEBA_HELP)
    if not root.exists():
        raise DataError(f"data.root {str(root)!r} does not exist. {CELEBA_HELP}")
    crop = CELEBA_CROP_BOX if cfg.celeba_crop else None
    return celeba_format(root, cfg.resolution, cfg.split, crop, CELEBA_HELP)


def celeba_format(
    root: Path, resolution: int, split: str, crop_box=None, help_text: str = ""
) -> ImageDataset:
    """A CelebA-layout folder: img_align_celeba/ + list_attr_celeba.txt (+ partition,
    + list_factors.txt for the bundled data). Attribute rows must match the image files."""
    img_dir = root / "img_align_celeba"
    if not img_dir.is_dir():
        raise DataError(f"expected the folder {img_dir} (CelebA layout). {help_text}".strip())
    present = {p.name for p in list_images(img_dir, help_text)}
    try:
        names, files, attrs = read_table(root / "list_attr_celeba.txt")
        missing = [f for f in files if f not in present]
        if missing:
            raise DataError(
                f"{root / 'list_attr_celeba.txt'} lists {len(missing)} image(s) not "
                f"in {img_dir}, e.g. {missing[:3]}: the attribute file does not "
                "match the images"
            )
        keep = np.arange(len(files))
        if split != "all":
            part = read_partition(root / "list_eval_partition.txt")
            keep = np.array(
                [i for i, f in enumerate(files) if part.get(f) == SPLITS[split]], dtype=np.int64
            )
            if keep.size == 0:
                raise DataError(f"split {split!r} selects no images in {root}")
        factors = fnames = None
        if (root / "list_factors.txt").is_file():
            fnames, ffiles, factors = read_table(root / "list_factors.txt", np.float32)
            if ffiles != files:
                raise DataError(
                    f"{root / 'list_factors.txt'} does not list the same images "
                    "as list_attr_celeba.txt"
                )
            factors = factors[keep]
    except AnnotationError as e:
        raise DataError(str(e)) from None
    return ImageDataset(
        [img_dir / files[i] for i in keep],
        resolution,
        attrs=attrs[keep],
        attr_names=names,
        factors=factors,
        factor_names=fnames,
        crop_box=crop_box,
    )
