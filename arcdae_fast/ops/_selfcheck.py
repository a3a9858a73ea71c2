"""One-time self-checks of fast backends on devices CI never sees (GPUs): run the op on a tiny
random input with the backend on the device and with the reference on CPU, forward and
gradients, fp32 and bf16; any disagreement disables the backend there (with the reason)."""

from __future__ import annotations

from collections.abc import Callable

import torch

# generous: a wrong kernel is off by O(1); a right one by float rounding
TOL = {torch.float32: (1e-3, 1e-3), torch.bfloat16: (6e-2, 6e-2)}


def compare(
    run: Callable[[str, torch.device, torch.dtype], list[torch.Tensor]],
    backend: str,
    device: torch.device,
) -> str | None:
    """run(backend, device, dtype) -> tensors (outputs and gradients). None when the backend
    on `device` matches the reference on CPU for every tensor, else a description."""
    for dtype, (atol, rtol) in TOL.items():
        fast = run(backend, device, dtype)
        ref = run("reference", torch.device("cpu"), dtype)
        for i, (f, r) in enumerate(zip(fast, ref)):
            f, r = f.detach().double().cpu(), r.detach().double().cpu()
            err = (f - r).abs().max().item() if f.numel() else 0.0
            if not err <= atol + rtol * r.abs().max().item():  # also catches NaN
                return (
                    f"failed its self-check on {device.type} ({str(dtype)[6:]}, tensor {i}: "
                    f"max error {err:.3g} vs the reference)"
                )
    return None


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def leaves(device: torch.device, dtype: torch.dtype, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(device, dtype).requires_grad_() for t in tensors]
