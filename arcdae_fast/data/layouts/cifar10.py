"""CIFAR-10's python version: data_batch_1..5 and test_batch of the cifar-10-batches-py
folder (data.root, or the folder holding it), read with a restricted unpickler that builds
only NumPy arrays and plain containers (a batch file cannot run code). Splits: train = data
batches 1-4 plus the first 5,000 of batch 5 (45,000), valid = the last 5,000 of batch 5,
test = test_batch."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ...config.schema import DataConfig
from ..arrays import ArrayDataset
from ..datasets import DataError
from ..layout import register, root_of

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


@register("cifar10", partition=True, help=CIFAR_HELP)
def cifar(cfg: DataConfig) -> ArrayDataset:
    return cifar10(root_of(cfg, CIFAR_HELP), cfg.resolution, cfg.split)


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
