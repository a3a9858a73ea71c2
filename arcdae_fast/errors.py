"""The one place where failures of the user's input or environment become one-line errors.

Every command's `main` runs its work through `run`: a `UserError` (a bad config, missing
data, an unwritable folder, a full disk, a second signal) is printed as `error: <one line>`
on stderr and becomes the exit status, never a traceback. Anything else is a bug and keeps
its traceback. I/O is wrapped where it happens (`doing`, `make_dir`, and
arcdae_fast/checkpoint.py's atomic writes), so the message names the operation, the path and
the cause, and says what is intact.

Exit statuses: 2 for input (config, data, arguments), 1 for the environment (I/O), 128 +
signal for an abort by a second SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


class UserError(Exception):
    """A problem of the user's input or environment, not a bug; `code` is the exit status."""

    code = 2


class IOFailure(UserError, OSError):
    """An operation on a path failed (an OSError, so code catching those still does)."""

    code = 1

    def __init__(self, op: str, path: os.PathLike | str, cause: BaseException | str, hint=""):
        why = describe(cause) if isinstance(cause, OSError) else str(cause)
        msg = f"cannot {op} {path}: {why}" + (f" ({hint})" if hint else "")
        Exception.__init__(self, msg)
        self.op, self.path, self.cause = op, Path(path), cause


class PeerLost(UserError):
    """Data parallel: a collective failed because another rank died, hung past
    train.dist_timeout_s, or lost its network."""

    code = 1


class Aborted(UserError):
    """A second SIGINT/SIGTERM: stop at once."""

    def __init__(self, signum: int, msg: str):
        super().__init__(msg)
        self.code = 128 + signum


REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "it exists already",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long",
}


def describe(e: OSError) -> str:
    return REASONS.get(e.errno) or (e.strerror or str(e) or type(e).__name__).lower()


@contextlib.contextmanager
def doing(op: str, path: os.PathLike | str, hint: str | Callable[[], str] = "") -> Iterator[None]:
    """Within: an OSError becomes IOFailure(op, path, ...); `hint` (or its value) says what
    is intact or what to do."""
    try:
        yield
    except IOFailure:
        raise
    except OSError as e:
        raise IOFailure(op, path, e, hint() if callable(hint) else hint) from None


def first_file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` (or path itself) that is not a folder."""
    for p in [path, *path.parents]:
        if p.exists():
            return None if p.is_dir() else p
    return None


def make_dir(path: os.PathLike | str, what: str = "folder") -> Path:
    """mkdir -p with a one-line error naming the path and the cause."""
    path = Path(path)
    blocker = first_file_above(path)
    if blocker == path:
        raise IOFailure(f"create the {what}", path, "it is a file, not a folder")
    if blocker is not None:
        raise IOFailure(f"create the {what}", path, f"{blocker} is a file, not a folder")
    with doing(f"create the {what}", path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_writable(folder: Path, need: int = 0, what: str = "") -> int:
    """A probe file written and removed in `folder`, and its free bytes (>= need, else an
    error saying how much is there and how much `what` needs)."""
    probe = folder / f".write-probe-{os.getpid()}.tmp"
    with doing("write into", folder):
        try:
            probe.write_bytes(b"0")
        finally:  # a full disk creates the file, then fails to write it: never left behind
            probe.unlink(missing_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise IOFailure(
            "use",
            folder,
            f"{free / 1e6:.1f} MB free, {what or 'this'} needs about {need / 1e6:.1f} MB",
            "free some space or choose another folder",
        )
    return free


def run(work: Callable[[], int]) -> int:
    """The work's exit status; a UserError printed as one line with its status."""
    try:
        return work()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return e.code
