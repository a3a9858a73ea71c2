"""Named phases of a training step as torch.profiler ranges ("arcdae::<phase>").

They show in traces and feed the breakdown of `python -m arcdae_fast.profile`. Inside a
torch.compile'd region they are skipped (the compiler fuses across phase boundaries, so
there is nothing to attribute; the compiled step shows as its forward and backward).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from torch.profiler import record_function

PREFIX = "arcdae::"
# top-level phases of one step (the profiler's table order); the forward's sub-phases are the
# method's own (Method.PHASES), the backward's is the denoiser's (every method has one)
STEP = ("data", "draw inputs", "forward", "backward", "grad all-reduce", "optimizer", "ema")
BACKWARD = ("denoiser bwd",)


_totals: dict[str, float] | None = None  # seconds per phase since the last take()


def phase(name: str) -> contextlib.AbstractContextManager:
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    if _totals is not None:
        return _timed(name)
    return record_function(PREFIX + name)


@contextlib.contextmanager
def _timed(name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    with record_function(PREFIX + name):
        yield
    _totals[name] += time.perf_counter() - t0


def timing(on: bool = True) -> None:
    """Also add up each phase's wall time on the host (the trainer's logs: `take`). On CUDA
    it is the time to issue the work, not to run it (no synchronisation)."""
    global _totals
    _totals = defaultdict(float) if on else None


def take() -> dict[str, float]:
    """The seconds per phase since the last call, and start again."""
    if _totals is None:
        return {}
    out = dict(_totals)
    _totals.clear()
    return out
