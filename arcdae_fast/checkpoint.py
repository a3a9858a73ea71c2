"""Checkpoints on disk: written atomically (temp file, fsync, rename), the newest few kept.

Two kinds, both under checkpoints/: `ckpt_XXXXXXXX.pt`, one torch.save file (one process,
DDP), and `ckpt_XXXXXXXX.dcp/`, a torch.distributed.checkpoint directory written by every
rank of an FSDP run (each its own shards; `meta.pt` inside holds the step, config and LR
schedule). A directory is written under a hidden temporary name and renamed into place by
rank 0 once every rank's files are synced, so a crash or kill at any moment leaves either
the old set of checkpoints or the old set plus a complete new one, never a truncated file or
a partial directory under a checkpoint name. Either kind resumes on any number of ranks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from .errors import UserError, doing, make_dir

# checkpoints written before 2026-12-06 stored torch.__version__ itself: a str subclass whose
# unpickling runs no code of the file's choosing
torch.serialization.add_safe_globals([TorchVersion])

PATTERN = re.compile(r"^ckpt_(\d{8})\.(pt|dcp)$")
META = "meta.pt"  # inside a .dcp directory: everything but the tensors
WEIGHTS = ".safetensors"  # a .pt checkpoint's weights sidecar (arcdae_fast/weights.py)


def sha256(path: Path) -> str:
    """The file's sha256, read in 1 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class UnsafeFile(UserError):
    """A file that needs pickle's code execution to load (not only tensors and plain data);
    it was not loaded."""


_trust_pickle = False


def trust_pickle(on: bool = True) -> None:
    """Let `load` unpickle arbitrary objects (a command's --trust-pickle): only for files from
    a source the user trusts, since unpickling can run any code the file names."""
    global _trust_pickle
    _trust_pickle = bool(on)


class _Trust(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        trust_pickle(True)
        setattr(namespace, self.dest, True)


def add_trust_flag(p: argparse.ArgumentParser) -> None:
    """A command's --trust-pickle flag (its parser is built per call: the setting starts off)."""
    trust_pickle(False)
    p.add_argument(
        "--trust-pickle",
        nargs=0,
        action=_Trust,
        default=False,
        help="allow checkpoints that need pickle (this can run code from the file: only for "
        "files from a source you trust)",
    )


def load(path: Path, map_location: str | torch.device = "cpu", what: str = "checkpoint") -> Any:
    """torch.load that never runs code from the file: weights_only (tensors, numbers, strings,
    containers) unless trust_pickle was called. A file that needs more raises UnsafeFile
    naming what it holds and the flag that allows it."""
    try:
        return torch.load(Path(path), map_location=map_location, weights_only=not _trust_pickle)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # not a refused object: a damaged or foreign file
            raise UserError(
                f"{what} {path} is not a readable torch file ({_last_line(e)})"
            ) from None
        held = f"it names {found.group(1)}"
        raise UnsafeFile(
            f"{what} {path} holds more than tensors and plain data ({held}), and loading it "
            "would run code; it was not loaded. If you trust its source, rerun with "
            "--trust-pickle"
        ) from None


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "documentation" not in ln]
    return lines[-1] if lines else type(e).__name__


def path_for(folder: Path, step: int, sharded: bool = False) -> Path:
    return Path(folder) / f"ckpt_{step:08d}.{'dcp' if sharded else 'pt'}"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return sorted(found)


TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # atomic_write's temp files
PARTIAL = re.compile(r"^\.ckpt_\d{8}\.dcp\.partial$")  # a sharded save in progress


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
        _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_in(e)
        if cause is not None and cause is not e:
            # torch.save's zip writer, cleaning up after a failed write (a full disk), raises
            # its own RuntimeError ("unexpected pos ...") over the OSError: report the OSError
            raise cause from None
        raise


def _os_error_in(e: BaseException | None) -> OSError | None:
    """The first OSError in e's chain of causes and contexts (e itself included)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save(folder: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    path = path_for(folder, step)
    atomic_write(path, lambda f: torch.save(state, f), "checkpoint", lambda: _intact(folder, path))
    _prune(folder, keep)
    return path


def _prune(folder: Path, keep: int) -> None:
    for _, old in list_checkpoints(folder)[:-keep]:
        with doing("remove the old checkpoint", old):
            _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
        path.with_suffix(WEIGHTS).unlink(missing_ok=True)  # its weights (arcdae_fast/weights.py)


def _intact(folder: Path, path: Path) -> str:
    found = [p for _, p in list_checkpoints(folder) if p != path]
    return f"the previous checkpoint {found[-1].name} is intact" if found else ""


def save_sharded(
    folder: Path, step: int, tensors: dict[str, Any], meta: dict[str, Any], keep: int = 3
) -> Path:
    """Every rank calls this (a collective): torch.distributed.checkpoint writes each rank's
    shards of `tensors` (state dicts of DTensors) into a hidden directory, rank 0 adds
    `meta.pt` and renames the directory into place after every rank has synced its files,
    then prunes to the newest `keep`."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    folder = Path(folder)
    path = path_for(folder, step, sharded=True)
    tmp = folder / f".{path.name}.partial"
    main = dist.get_rank() == 0
    with doing("write checkpoint", path, lambda: _intact(folder, path)):
        if main and tmp.exists():
            shutil.rmtree(tmp)
        dist.barrier()
        dcp.save(tensors, storage_writer=dcp.FileSystemWriter(tmp, sync_files=True))
        dist.barrier()  # every rank's shards are on disk (synced)
        if main:
            _atomic_write(tmp / META, lambda f: torch.save(meta, f))
            if path.exists():  # the same step saved again: move the old one aside first
                old = folder / f".{path.name}.old.partial"
                os.replace(path, old)
                shutil.rmtree(old)
            os.replace(tmp, path)
            _fsync_dir(folder)
            _prune(folder, keep)
        dist.barrier()
    return path


def _fsync_dir(folder: Path) -> None:
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_meta(path: Path) -> dict[str, Any]:
    """A .dcp checkpoint's meta.pt, marked with "sharded_dir" (the tensors are read by
    Session.load_state or `read_full`); raises when the directory is incomplete."""
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{path} has no .metadata (not a complete checkpoint)")
    meta = load(path / META)
    return {**meta, "sharded_dir": path}


def read_full(path: Path) -> dict[str, Any]:
    """A checkpoint (file or .dcp directory) as one dict of full tensors in one process. A
    .dcp's optimizer state comes as "optimizer_fqn" (keyed by parameter name, as
    torch.distributed.checkpoint.state_dict writes it) instead of "optimizer"."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    path = Path(path)
    if not path.is_dir():
        return load(path)
    meta = read_meta(path)
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(path, Path(tmp) / "full.pt")
        full = load(Path(tmp) / "full.pt")
    out = {k: v for k, v in meta.items() if k != "sharded_dir"}
    out.update(model=full["model"], ema=full["ema"], optimizer=None)
    out["optimizer_fqn"] = full.get("optimizer")
    return out


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temp files interrupted atomic writes left in `folder`, and weights sidecars
    whose checkpoint was never written (never checkpoints: those are only ever renamed into
    place complete); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = [
        p
        for p in folder.iterdir()
        if (TEMP.match(p.name) and p.is_file())
        or (PARTIAL.match(p.name) and p.is_dir())
        or (
            p.suffix == WEIGHTS and p.name.startswith("ckpt_") and not p.with_suffix(".pt").exists()
        )
    ]
    for p in gone:
        with doing("remove the leftover temp file", p):
            _remove(p)
    return gone


def load_latest(
    folder: Path, map_location: str | torch.device = "cpu"
) -> tuple[int, dict[str, Any], Path] | None:
    """The newest checkpoint that loads; an unreadable one is reported and the next tried.
    A .dcp directory gives its meta (read_meta): its tensors are read by the session."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            if path.is_dir():
                return step, read_meta(path), path
            return step, load(path, map_location), path
        except UnsafeFile:  # never skipped: an older checkpoint is not what the user asked for
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read means "try an older one"
            warnings.warn(
                f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); trying an older one",
                stacklevel=2,
            )
    return None
