"""Named phases of a training step as torch.profiler ranges ("arcdae::<phase>").

They show in traces and feed the breakdown of `python -m arcdae_fast.profile`. Inside a
torch.compile'd region they are skipped (the compiler fuses across phase boundaries, so
there is nothing to attribute; the compiled step shows as its forward and backward).
"""

from __future__ import annotations

import contextlib

import torch
from torch.profiler import record_function

PREFIX = "arcdae::"
# top-level phases of one step (the profiler's table order); the forward's sub-phases are the
# method's own (Method.PHASES), the backward's is the denoiser's (every method has one)
STEP = ("data", "draw inputs", "forward", "backward", "grad all-reduce", "optimizer", "ema")
BACKWARD = ("denoiser bwd",)


def phase(name: str) -> contextlib.AbstractContextManager:
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return record_function(PREFIX + name)
