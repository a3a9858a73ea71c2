"""Work done once per machine (the bundled dataset, a prepared dataset, cached FID statistics)
while several processes may start it at the same moment: the ranks of a torchrun job before
any process group exists, or two jobs sharing a data folder. `exclusive(target)` holds an
advisory lock file beside `target` (`.<name>.lock`, flock): the first process does the work,
the others wait, then find the finished result and use it."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from .errors import doing, make_dir


@contextlib.contextmanager
def exclusive(target: str | Path) -> Iterator[None]:
    """Within: no other process holds the lock of `target` (re-check for the result inside)."""
    target = Path(target)
    make_dir(target.parent)
    lock = target.parent / f".{target.name}.lock"
    with doing("lock", lock):
        f = open(lock, "a")  # noqa: SIM115 - closed below
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process works on target
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
