"""DDIM sampling and inversion conditioned on z (deterministic, eta = 0) on a VP schedule."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import VPSchedule, per_sample, split_prediction


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Ascending, evenly spaced subsequence of {0..T-1} ending at T-1 (one step: [T-1], the
    sampler's single x0 estimate from x_T)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}], got {steps}")
    if steps == 1:
        return [T - 1]
    seq = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long().unique()
    return seq.tolist()


Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def ddim_sample(
    model: Denoiser,
    z: torch.Tensor,
    schedule: VPSchedule,
    x_T: torch.Tensor,
    steps: int = 50,
    param: str = "eps",
    clip: bool = True,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from x_T down to x_0, conditioned on z.

    x_T is either random N(0, I) (the "tractable" decoding) or `ddim_invert(...)` of an image.
    model(x_t, i, z) returns the network prediction in parameterization `param`.
    """
    seq = ddim_timesteps(schedule.T, steps)
    x = x_T
    for k in range(len(seq) - 1, -1, -1):
        i = torch.full((x.shape[0],), seq[k], device=x.device, dtype=torch.long)
        a, s = schedule.alpha_sigma(i)
        x0, eps = split_prediction(param, model(x, i, z).to(x.dtype), x, a, s)
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - per_sample(a, x) * x0) / per_sample(s, x)
        if k == 0:
            return x0
        a_prev, s_prev = schedule.alpha_sigma(torch.full_like(i, seq[k - 1]))
        x = per_sample(a_prev, x) * x0 + per_sample(s_prev, x) * eps
    return x


@torch.no_grad()
def ddim_invert(
    model: Denoiser,
    x0: torch.Tensor,
    z: torch.Tensor,
    schedule: VPSchedule,
    steps: int = 50,
    param: str = "eps",
) -> torch.Tensor:
    """DDIM inversion: run the deterministic ODE from x_0 up to x_T (the last index T-1)."""
    seq = ddim_timesteps(schedule.T, steps)
    x = x0
    for k in range(len(seq)):
        i_prev = torch.full((x.shape[0],), seq[max(k - 1, 0)], device=x.device, dtype=torch.long)
        pred = model(x, i_prev, z).to(x.dtype)
        x0_hat, eps = split_prediction(param, pred, x, *schedule.alpha_sigma(i_prev))
        if k == 0:  # x is the clean image itself (alphabar = 1)
            x0_hat = x
        a, s = schedule.alpha_sigma(torch.full_like(i_prev, seq[k]))
        x = per_sample(a, x) * x0_hat + per_sample(s, x) * eps
    return x
