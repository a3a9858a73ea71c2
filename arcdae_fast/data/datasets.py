"""The image dataset every layout builds (data/layouts/): files read with PIL, with their
annotations (binary attributes, continuous factors, class labels). Items are indexed by the
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
from .decode import DEFAULT_MAX_PIXELS, ImageError, decode

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


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
        self.channels = 3  # image files are served as RGB (data/arrays.py: grey as 1 or 3)
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
