"""Checkpoints on disk: written atomically (temp file, fsync, rename), the newest few kept.

A crash or kill at any moment leaves either the old set of checkpoints or the old set plus a
complete new one, never a truncated file under a checkpoint name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import doing, make_dir

PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")


def sha256(path: Path) -> str:
    """The file's sha256, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path_for(folder: Path, step: int) -> Path:
    return Path(folder) / f"ckpt_{step:08d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return sorted(found)


TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # atomic_write's temp files


def atomic_write(path: Path, write: Any, what: str = "", hint: str | Any = "") -> None:
    """Call write(file_object) on a temp file beside `path`, fsync it, rename onto `path`. An
    OSError becomes a one-line IOFailure naming `what` (e.g. "checkpoint") and `path`; `hint`
    (a string or a callable giving one) says what is intact."""
    path = Path(path)
    make_dir(path.parent)
    with doing(f"write {what}".strip(), path, hint):
        _atomic_write(path, write)


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() honours umask
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(folder: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    path = path_for(folder, step)

    def intact() -> str:
        found = [p for _, p in list_checkpoints(folder) if p != path]
        return f"the previous checkpoint {found[-1].name} is intact" if found else ""

    atomic_write(path, lambda f: torch.save(state, f), "checkpoint", intact)
    for _, old in list_checkpoints(folder)[:-keep]:
        with doing("remove the old checkpoint", old):
            old.unlink(missing_ok=True)
    return path


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temp files interrupted atomic writes left in `folder` (never checkpoints:
    those are only ever renamed into place complete); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = [p for p in folder.iterdir() if TEMP.match(p.name) and p.is_file()]
    for p in gone:
        with doing("remove the leftover temp file", p):
            p.unlink(missing_ok=True)
    return gone


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
