"""Fashion-MNIST's original IDX files (Debian's package dataset-fashion-mnist installs them
under /usr/share/datasets/fashion-mnist, the default data.root; gzipped or not): 28 x 28 grey
product photographs, 10 classes, served as data/arrays.py says (padded to 32 px; RGB, or one
channel with data.channels=1).
Splits: train = the first 55,000 images of the training file, valid = its last 5,000, test =
the 10,000 test images; "all" = the training file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ...config.schema import DataConfig
from ..arrays import ArrayDataset
from ..datasets import DataError
from ..layout import register

FASHION_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_HELP = (
    "Fashion-MNIST comes from Debian's package dataset-fashion-mnist "
    "(`sudo apt-get install dataset-fashion-mnist`, or `make realdata`), which installs its "
    f"IDX files under {FASHION_ROOT}; elsewhere, put train-images-idx3-ubyte(.gz), "
    "train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) "
    "in one folder and set data.root to it."
)
FASHION_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@register("fashion_mnist", partition=True, help=FASHION_HELP, needs_root=False)
def fashion(cfg: DataConfig) -> ArrayDataset:
    return fashion_mnist(cfg.root, cfg.resolution, cfg.split, cfg.channels)


def _open(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not): magic 0 0 type ndim, ndim big-endian sizes, the data."""
    try:
        raw = _open(path)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read the IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim, dtype = raw[3], np.dtype(IDX_TYPES[raw[2]])
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    start, count = 4 + 4 * ndim, int(np.prod(shape))
    if len(raw) - start != count * dtype.itemsize:
        raise DataError(
            f"{path}: the header says {shape} ({count * dtype.itemsize} bytes of data) but the "
            f"file holds {len(raw) - start}: truncated or not an IDX file"
        )
    return np.frombuffer(raw, dtype, count, start).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str, help_text: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"expected {root / stem} (or {stem}.gz). {help_text}")


def fashion_mnist(
    root: str | Path | None, resolution: int, split: str, channels: int = 3
) -> ArrayDataset:
    root = Path(root or FASHION_ROOT).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root {str(root)!r} does not exist. {FASHION_HELP}")
    parts = []
    for part in ("train", "t10k"):
        images = read_idx(_find(root, f"{part}-images-idx3-ubyte", FASHION_HELP))
        labels = read_idx(_find(root, f"{part}-labels-idx1-ubyte", FASHION_HELP))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{root}: {part} images {images.shape} and labels {labels.shape} do not match"
            )
        parts.append((images, labels.astype(np.int64)))
    (tr_x, tr_y), (te_x, te_y) = parts
    n_valid = min(5000, len(tr_x) // 10)
    pick = {
        "train": (tr_x[:-n_valid], tr_y[:-n_valid]),
        "valid": (tr_x[-n_valid:], tr_y[-n_valid:]),
        "test": (te_x, te_y),
        "all": (tr_x, tr_y),
    }[split]
    return ArrayDataset(*pick, FASHION_CLASSES, resolution, f"{root}/{split}", channels)
