"""Class-labelled datasets stored as arrays rather than image files: Fashion-MNIST's IDX files
and CIFAR-10's python batches. They decode once into memory and serve the same items as
`ImageDataset` (image in [-1, 1], index, label), through the torch DataLoader (DALI reads
image files; data.loader=dali with these datasets is refused by name).

Fashion-MNIST: 28 x 28 grey images, padded with 2 black pixels a side to 32 x 32 (the
images' background is black, so padding adds no content and changes no pixel) and replicated
to 3 channels (the networks, augmentations and feature networks all take RGB); any other
resolution resizes the padded 32 px image (bicubic). Splits: train = the first 55,000
images of the training file, valid = its last 5,000, test = the 10,000 test images.

CIFAR-10: `data_batch_1..5` and `test_batch` of the `cifar-10-batches-py` folder, read with a
restricted unpickler that builds only NumPy arrays and plain containers (a batch file cannot
run code). Splits: train = data batches 1-4 plus the first 5,000 of batch 5 (45,000), valid
= the last 5,000 of batch 5, test = test_batch.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DataError, ImageDataset

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
CIFAR_HELP = (
    "CIFAR-10 is not downloaded automatically. Get the python version "
    "(https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), unpack it and set data.root "
    "to its cifar-10-batches-py folder (or the folder holding it)."
)
CIFAR_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class ArrayDataset(ImageDataset):
    """uint8 pixels (N, H, W) grey or (N, H, W, 3) RGB with class labels, served at
    `resolution` (grey replicated to RGB; 28 px padded to 32 first)."""

    def __init__(
        self,
        pixels: np.ndarray,
        labels: np.ndarray,
        class_names: list[str],
        resolution: int,
        source: str,
    ):
        names = [f"{source}#{i}" for i in range(len(pixels))]
        super().__init__(names, resolution, labels=labels, class_names=class_names)
        self.pixels, self.source = pixels, source

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        idx = np.asarray(idx, dtype=np.int64)
        out = ArrayDataset(
            self.pixels[idx], self.labels[idx], self.class_names, self.resolution, self.source
        )
        out.files = [self.files[i] for i in idx]
        return out

    def image(self, idx: int, flip: bool = False) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.pixels[idx])).float()
        x = x.expand(3, *x.shape) if x.ndim == 2 else x.permute(2, 0, 1)
        if x.shape[-1] == 28:  # Fashion-MNIST: 2 black pixels a side
            x = F.pad(x, (2, 2, 2, 2))
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x[None], size=self.resolution, mode="bicubic", antialias=True)[0]
            x = x.clamp(0, 255)
        if flip:
            x = x.flip(-1)
        return x.div(127.5).sub(1.0).contiguous()

    def __getitem__(self, key: int | tuple) -> dict:
        idx, flip = (tuple(key) + (False,))[:2] if isinstance(key, tuple) else (key, False)
        return {"image": self.image(idx, bool(flip)), "index": idx, "label": int(self.labels[idx])}


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


def fashion_mnist(root: str | Path | None, resolution: int, split: str) -> ArrayDataset:
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
    return ArrayDataset(*pick, FASHION_CLASSES, resolution, f"{root}/{split}")


class _ArraysOnly(pickle.Unpickler):
    """Builds NumPy arrays, dtypes and plain containers; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DataError(f"expected the CIFAR-10 batch {path}. {CIFAR_HELP}")
    try:
        d = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(d[b"labels"], np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as e:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({e})") from None
    if len(data) != len(labels):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return np.ascontiguousarray(data), labels


def cifar10(root: str | Path | None, resolution: int, split: str) -> ArrayDataset:
    if not root:
        raise DataError(f"data.root is not set for data.dataset='cifar10'. {CIFAR_HELP}")
    root = Path(root).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise DataError(f"data.root {str(root)!r} does not exist. {CIFAR_HELP}")
    if split == "test":
        x, y = _cifar_batch(root / "test_batch")
    else:
        batches = [_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
        x, y = np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
        n_valid = min(5000, len(x) // 10)
        if split == "train":
            x, y = x[:-n_valid], y[:-n_valid]
        elif split == "valid":
            x, y = x[-n_valid:], y[-n_valid:]
    return ArrayDataset(x, y, CIFAR_CLASSES, resolution, f"{root}/{split}")
