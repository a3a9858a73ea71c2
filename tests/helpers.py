"""Shared helpers for comparing fast backends with the float64 reference (DESIGN.md)."""

from __future__ import annotations

import torch

from arcdae_fast.ops import _backends

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
LOW = (torch.float32, torch.bfloat16)


def fast_backends(op: str) -> list[str]:
    """Non-reference backends of `op` that can run on the test device (forced or auto)."""
    return [
        name
        for name, b in _backends.backends(op).items()
        if name != "reference" and not b.reasons(DEVICE, torch.float32)
    ]


def max_err(a: torch.Tensor, truth: torch.Tensor) -> float:
    return (a.detach().double().cpu() - truth.detach().double().cpu()).abs().max().item()


def assert_matches(
    fast: torch.Tensor, ref_same_dtype: torch.Tensor, truth: torch.Tensor, tol: dict, what: str = ""
) -> None:
    """err(fast) <= 2 * err(reference in the same dtype) + atol + rtol * max|truth|."""
    bound = (
        2 * max_err(ref_same_dtype, truth) + tol["atol"] + tol["rtol"] * truth.abs().max().item()
    )
    err = max_err(fast, truth)
    assert err <= bound, f"{what}: error {err:.3g} > bound {bound:.3g}"
