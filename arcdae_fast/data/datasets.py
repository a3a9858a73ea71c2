"""Image datasets read with PIL: image folders (recursive), FFHQ, CelebA-format (CelebA itself
and the bundled synthetic faces), ImageNet's class-folder layout. Items are indexed by the
sampler's (index, flip) pairs, or (index, flip, crop position) with data.crop=random.

An image that cannot be decoded is not fatal: the item comes back as `Skipped`, the collate
function drops it, warns once naming the file and counts it in the batch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .attrs import SPLITS, AnnotationError, read_partition, read_table
from .decode import DEFAULT_MAX_PIXELS, ImageError, decode

IMAGE_EXTS = (".jpg", ".jpeg", ".png")

FFHQ_HELP = (
    "FFHQ is not downloaded automatically. Get it from "
    "https://github.com/NVlabs/ffhq-dataset (the 'thumbnails128x128' folder for 128 px "
    "training, or 'images1024x1024'), keep its layout (numbered subfolders 00000/, "
    "01000/, ... holding the PNGs) and set data.root to that folder, e.g. "
    "`python -m arcdae_fast.train --config ffhq.yaml data.root=/data/ffhq/thumbnails128x128`."
)
IMAGENET_HELP = (
    "ImageNet is not downloaded automatically. Get ILSVRC-2012 (https://image-net.org) and lay "
    "it out with class subfolders: ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG (the "
    "validation images sorted into their classes, e.g. with the common valprep.sh), then set "
    "data.root=ROOT."
)
CELEBA_HELP = (
    "CelebA is not downloaded automatically. Get it from "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html and lay it out as "
    "ROOT/img_align_celeba/*.jpg, ROOT/list_attr_celeba.txt and "
    "ROOT/list_eval_partition.txt, then set data.root=ROOT."
)


class DataError(UserError, ValueError):
    """A dataset problem reported to the user without a traceback."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def list_images(root: str | Path, help_text: str = "") -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise DataError(f"data.root {str(root)!r} does not exist. {help_text}".strip())
    if not root.is_dir():
        raise DataError(f"data.root {str(root)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise DataError(
            f"no images ({', '.join(IMAGE_EXTS)}) found under {str(root)!r} "
            f"(searched recursively). {help_text}".strip()
        )
    return files


def load_image(
    path: Path,
    resolution: int,
    crop_box: tuple[int, int, int, int] | None = None,
    flip: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    crop_at: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Decode (arcdae_fast/data/decode.py: 8-bit RGB from any mode, the pixel limit), optional
    fixed crop, resize the shorter side to `resolution` (antialiased), a square crop (centred,
    or at `crop_at` = (x, y) in [0, 1], the window's offset as a share of the room left, as
    DALI's crop_pos_x/y), optional horizontal flip; float32 (3, R, R) in [-1, 1]."""
    with decode(path, max_pixels) as im:
        if crop_box is not None:
            im = im.crop(crop_box)
        w, h = im.size
        s = resolution / min(w, h)
        if (w, h) != (resolution, resolution):
            im = im.resize(
                (max(resolution, round(w * s)), max(resolution, round(h * s))),
                Image.BICUBIC,
                reducing_gap=None,
            )
            w, h = im.size
            if crop_at is None:
                left, top = (w - resolution) // 2, (h - resolution) // 2
            else:
                left, top = (
                    round(crop_at[0] * (w - resolution)),
                    round(crop_at[1] * (h - resolution)),
                )
            im = im.crop((left, top, left + resolution, top + resolution))
        arr = np.asarray(im, dtype=np.uint8)
    if flip:
        arr = arr[:, ::-1]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ImageDataset(torch.utils.data.Dataset):
    """Files (+ optional per-file attributes / factors) -> dicts of tensors."""

    def __init__(
        self,
        files: list[Path],
        resolution: int,
        *,
        attrs: np.ndarray | None = None,
        attr_names: list[str] | None = None,
        factors: np.ndarray | None = None,
        factor_names: list[str] | None = None,
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        crop_box: tuple[int, int, int, int] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.files, self.resolution, self.crop_box = files, resolution, crop_box
        self.max_pixels = max_pixels
        self.attrs, self.attr_names = attrs, attr_names or []
        self.factors, self.factor_names = factors, factor_names or []
        self.labels, self.class_names = labels, class_names or []  # class index per item

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, idx: np.ndarray) -> ImageDataset:
        """The items at `idx` (their annotations with them)."""
        idx = np.asarray(idx, dtype=np.int64)
        return ImageDataset(
            [self.files[i] for i in idx],
            self.resolution,
            attrs=None if self.attrs is None else self.attrs[idx],
            attr_names=self.attr_names,
            factors=None if self.factors is None else self.factors[idx],
            factor_names=self.factor_names,
            labels=None if self.labels is None else self.labels[idx],
            class_names=self.class_names,
            crop_box=self.crop_box,
            max_pixels=self.max_pixels,
        )

    def __getitem__(self, key: int | tuple) -> dict | Skipped:
        """key: an index, or the sampler's (index, flip) / (index, flip, (crop x, crop y))."""
        idx, flip, at = (tuple(key) + (None,))[:3] if isinstance(key, tuple) else (key, False, None)
        path = self.files[idx]
        try:
            img = load_image(path, self.resolution, self.crop_box, flip, self.max_pixels, at)
        except ImageError as e:
            return Skipped(str(path), str(e))
        except OSError as e:  # the file itself (vanished, unreadable)
            return Skipped(str(path), f"{type(e).__name__}: {e}")
        item = {"image": img, "index": idx}
        if self.attrs is not None:
            item["attrs"] = torch.from_numpy(self.attrs[idx].astype(np.float32))
        if self.factors is not None:
            item["factors"] = torch.from_numpy(self.factors[idx].astype(np.float32))
        if self.labels is not None:
            item["label"] = int(self.labels[idx])
        return item


def first_readable(ds: ImageDataset, n: int) -> dict:
    """A batch of the first n images that decode (the fixed sample grid); a DataError naming
    an example when none of the dataset's images does."""
    good, bad = [], None
    for i in range(len(ds)):
        item = ds[i]
        if isinstance(item, Skipped):
            bad = bad or item
            warn_skipped(item)
            continue
        good.append(item)
        if len(good) == n:
            break
    if not good:
        where = Path(ds.files[0]).parent if ds.files else "the dataset"
        raise DataError(
            f"none of the {len(ds)} images under {where} can be decoded (e.g. {bad.path}: "
            f"{bad.reason})"
        )
    return collate(good)


_warned: set[str] = set()


def warn_skipped(skipped: Skipped) -> None:
    """The warning naming an unreadable image, once per file (both loaders)."""
    if skipped.path not in _warned:
        _warned.add(skipped.path)
        warnings.warn(f"skipping unreadable image {skipped.path} ({skipped.reason})", stacklevel=3)


def collate(items: list[dict | Skipped]) -> dict:
    """Stack good items; drop `Skipped` ones with a warning naming each file (once)."""
    good = [it for it in items if not isinstance(it, Skipped)]
    for it in items:
        if isinstance(it, Skipped):
            warn_skipped(it)
    out: dict = {"skipped": len(items) - len(good)}
    if good:
        out["index"] = torch.tensor([it["index"] for it in good])
        for k in ("image", "attrs", "factors"):
            if k in good[0]:
                out[k] = torch.stack([it[k] for it in good])
        if "label" in good[0]:
            out["label"] = torch.tensor([it["label"] for it in good])
    return out


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
