"""AdaGN, the U-Net's conditioning normalization (SPEC section 3, DiffAE-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backends
from ._validate import check_nonempty, check_positive, check_tensor

OP = "adagn"


def adagn(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    zscale: torch.Tensor | None = None,
    *,
    groups: int,
    eps: float = 1e-5,
    backend: str = "auto",
) -> torch.Tensor:
    """y = SiLU((GroupNorm(x) * (1 + scale) + shift) * (1 + zscale)).

    x: (B, C, H, W) (any memory format); weight, bias: (C,) GroupNorm affine or None;
    scale, shift: (B, C) from the timestep embedding; zscale: (B, C) from the semantic code,
    or None. Statistics in float32; returns x's dtype.

    Equivalent PyTorch::

        h = F.group_norm(x.float(), groups, weight, bias, eps)
        h = h * (1 + scale[..., None, None]) + shift[..., None, None]
        F.silu(h * (1 + zscale[..., None, None]))
    """
    check_tensor(OP, "x", x, shape=("B", "C", None, None))
    b, c = x.shape[:2]
    check_nonempty(OP, "x", x)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(OP, name, t, shape=(c,), device=x.device)
    check_tensor(OP, "scale", scale, shape=(b, c), device=x.device)
    check_tensor(OP, "shift", shift, shape=(b, c), device=x.device)
    if zscale is not None:
        check_tensor(OP, "zscale", zscale, shape=(b, c), device=x.device)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups:
        raise ValueError(
            f"{OP}: argument 'groups' must be a positive divisor of C={c}, got {groups!r}"
        )
    eps = check_positive(OP, "eps", eps)
    impl = _backends.resolve(OP, backend, x.device, x.dtype)
    return impl.fn(x, weight, bias, scale, shift, zscale, groups, eps)


def adagn_reference(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    zscale: torch.Tensor | None,
    groups: int,
    eps: float,
) -> torch.Tensor:
    """Eager ground truth."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(ct)

    h = F.group_norm(x.to(ct), groups, cast(weight), cast(bias), eps)
    h = h * (1 + cast(scale)[..., None, None]) + cast(shift)[..., None, None]
    if zscale is not None:
        h = h * (1 + cast(zscale)[..., None, None])
    return F.silu(h).to(x.dtype)


_backends.register(
    OP,
    "reference",
    adagn_reference,
    priority={"cpu": 0, "cuda": 0, "mps": 0, "meta": 0},
    dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16),
)
