"""Whether the Triton backend can run on a device type, and why not."""

from __future__ import annotations

import importlib.util

import torch

PRIORITY = {"cuda": 10, "cpu": -1}  # on CPU only when forced: the interpreter is slow


def reasons(device_type: str) -> list[str]:
    if importlib.util.find_spec("triton") is None:
        return ["the 'triton' package is not installed (pip install triton; Linux x86_64)"]
    from .. import kernels  # cheap: records TRITON_INTERPRET, does not import triton

    if device_type == "cuda":
        return [] if torch.cuda.is_available() else ["torch.cuda.is_available() is False"]
    if device_type == "cpu":
        if kernels.INTERPRET:
            return []
        return [
            "CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 before "
            "importing arcdae_fast (correct but slow; meant for tests)"
        ]
    return [f"Triton has no backend for device type {device_type!r}"]


def register(op: str, selfcheck=None) -> None:
    """Register the Triton backend of `op` (its kernels: arcdae_fast.kernels.<op>)."""
    from . import _backends

    _backends.register(
        op,
        "triton",
        f"arcdae_fast.kernels.{op}",
        priority=PRIORITY,
        dtypes=_backends.LOW_AND_SINGLE,
        probe=reasons,
    )
