"""CelebA-format annotation files.

`list_attr_celeba.txt`: line 1 the image count, line 2 the attribute names, then one line per
image: file name and one value per attribute (CelebA uses 1 / -1). The bundled dataset uses
the same format for its continuous factors (`list_factors.txt`, float values).
`list_eval_partition.txt`: file name and 0 (train), 1 (valid) or 2 (test) per line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = {"train": 0, "valid": 1, "test": 2}


class AnnotationError(ValueError):
    pass


def write_table(
    path: Path, names: list[str], files: list[str], values: np.ndarray, fmt: str = "{:2d}"
) -> None:
    lines = [str(len(files)), " ".join(names)]
    lines += [
        f"{f} " + " ".join(fmt.format(v) for v in row) for f, row in zip(files, values.tolist())
    ]
    Path(path).write_text("\n".join(lines) + "\n")


def read_table(path: Path, dtype: type = np.int8) -> tuple[list[str], list[str], np.ndarray]:
    """Returns (attribute names, file names, values (N, A))."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise AnnotationError(f"{path}: expected a count line and a header line")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise AnnotationError(f"{path}: line 1 must be the image count, got {lines[0]!r}") from None
    names = lines[1].split()
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise AnnotationError(f"{path}: line 1 says {count} images, the file lists {len(rows)}")
    files, vals = [], []
    for n, parts in enumerate(rows, start=3):
        if len(parts) != len(names) + 1:
            raise AnnotationError(
                f"{path}: line {n} has {len(parts) - 1} values, expected "
                f"{len(names)} (one per attribute)"
            )
        files.append(parts[0])
        try:
            vals.append([float(v) for v in parts[1:]])
        except ValueError:
            raise AnnotationError(f"{path}: line {n} has a non-numeric value") from None
    return (
        names,
        files,
        np.asarray(vals, dtype=np.float64).reshape(len(files), len(names)).astype(dtype),
    )


def read_partition(path: Path) -> dict[str, int]:
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"partition file {path} does not exist")
    out = {}
    for n, ln in enumerate(path.read_text().splitlines(), start=1):
        if not ln.strip():
            continue
        parts = ln.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise AnnotationError(f"{path}: line {n} must be '<file> <0|1|2>', got {ln!r}")
        out[parts[0]] = int(parts[1])
    return out


def write_partition(path: Path, files: list[str], splits: list[int]) -> None:
    Path(path).write_text("".join(f"{f} {s}\n" for f, s in zip(files, splits)))
