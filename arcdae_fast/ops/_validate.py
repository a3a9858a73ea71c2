"""Argument checks shared by the public ops: every failure names the op, the argument,
what was expected and what was given (DESIGN.md, "The op contract")."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _fmt_shape(shape: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_tensor(
    op: str,
    name: str,
    t: object,
    *,
    shape: Sequence[int | str | None] | None = None,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    device: torch.device | None = None,
) -> dict[str, int]:
    """Check one tensor argument. `shape` entries: int (exact), None (any), or a symbol str
    bound on first use; returns the symbol bindings so callers can cross-check arguments."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(
            f"{op}: argument '{name}' must have dtype in ({names}), got "
            f"{str(t.dtype).replace('torch.', '')}"
        )
    if device is not None and t.device != device:
        raise ValueError(
            f"{op}: argument '{name}' must be on device {device} (like the first "
            f"input), got {t.device}"
        )
    bound: dict[str, int] = {}
    if shape is not None:
        ok = t.dim() == len(shape)
        if ok:
            for want, got in zip(shape, t.shape):
                if isinstance(want, int) and want != got:
                    ok = False
                elif isinstance(want, str):
                    if bound.setdefault(want, got) != got:
                        ok = False
        if not ok:
            raise ValueError(
                f"{op}: argument '{name}' must have shape {_fmt_shape(shape)}, got {tuple(t.shape)}"
            )
    return bound


def check_same(op: str, what: str, **values: int) -> None:
    """All keyword values must be equal, e.g. check_same(op, "D", query=D1, key=D2)."""
    if len(set(values.values())) > 1:
        got = ", ".join(f"{k}={v}" for k, v in values.items())
        raise ValueError(f"{op}: {what} must match across arguments, got {got}")


def check_choice(op: str, name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        raise ValueError(f"{op}: argument '{name}' must be one of {tuple(choices)}, got {value!r}")


def check_positive(op: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: argument '{name}' must be a number, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{op}: argument '{name}' must be > 0, got {value!r}")
    return float(value)


def check_nonempty(op: str, name: str, t: torch.Tensor, dim: int = 0, what: str = "batch") -> None:
    if t.shape[dim] == 0:
        raise ValueError(
            f"{op}: argument '{name}' has an empty {what} (size 0 along dim {dim}); "
            "at least one element is required"
        )
