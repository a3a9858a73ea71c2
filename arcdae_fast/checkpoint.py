"""Checkpoints on disk: written atomically (temp file, fsync, rename), the newest few kept.

A crash or kill at any moment leaves either the old set of checkpoints or the old set plus a
complete new one, never a truncated file under a checkpoint name.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")


def path_for(folder: Path, step: int) -> Path:
    return Path(folder) / f"ckpt_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return sorted(found)


def atomic_write(path: Path, write: Any) -> None:
    """Call write(file_object) on a temp file beside `path`, fsync it, rename onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(folder: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    path = path_for(folder, step)
    atomic_write(path, lambda f: torch.save(state, f))
    for _, old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(
    folder: Path, map_location: str | torch.device = "cpu"
) -> tuple[int, dict[str, Any], Path] | None:
    """The newest checkpoint that loads; an unreadable one is reported and the next tried."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            return step, torch.load(path, map_location=map_location, weights_only=False), path
        except Exception as e:  # noqa: BLE001 - any failure to read means "try an older one"
            warnings.warn(
                f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); trying an older one",
                stacklevel=2,
            )
    return None
