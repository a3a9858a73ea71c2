"""The rectified-flow path (SPEC section 7, DGAE) and its ODE samplers.

    x_t = (1 - t) x0 + t eps,   v = dx_t/dt = eps - x0,   t in [0, 1] continuous

so t = 0 is the data and t = 1 pure noise; the one-step estimate of x0 from a predicted v is
x0' = x_t - t v. Decoding integrates dx/dt = v(x_t, t) from t = 1 down to 0, inversion from
0 up to 1, on N evenly spaced steps with Euler's or Heun's rule.

The network sees the time as t * TIME_SCALE (the sinusoidal embedding's frequencies were
laid out for timestep indices in 0..1000, as ADM's and DiffAE's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedules import per_sample

DENSITIES = ("uniform", "logit_normal")
SOLVERS = ("euler", "heun")
TIME_SCALE = 1000.0

# v = model(x_t, t) with t (B,) float in [0, 1]
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FlowPath:
    """Sampling density of t: "uniform" on [0, 1], or "logit_normal" (t = sigmoid(m + s n),
    n ~ N(0, 1); Esser et al. 2024) with location `loc` and scale `scale`."""

    def __init__(self, density: str = "uniform", loc: float = 0.0, scale: float = 1.0):
        if density not in DENSITIES:
            raise ValueError(f"density must be one of {DENSITIES}, got {density!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.density, self.loc, self.scale = density, loc, scale

    def sample_t(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """(n,) float32 times in [0, 1]."""
        if self.density == "uniform":
            return torch.rand(n, generator=generator, device=device)
        u = torch.randn(n, generator=generator, device=device)
        return torch.sigmoid(self.loc + self.scale * u)

    @staticmethod
    def x_t(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        tt = per_sample(t, x0)
        return (1 - tt) * x0 + tt * noise

    @staticmethod
    def target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """v = eps - x0."""
        return noise - x0

    @staticmethod
    def x0_estimate(x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x0' = x_t - t v (exact when v is the true velocity)."""
        return x_t - per_sample(t, x_t) * v


def _check(steps: int, solver: str) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")


@torch.no_grad()
def ode_solve(
    model: Velocity, x: torch.Tensor, t0: float, t1: float, steps: int, solver: str = "euler"
) -> torch.Tensor:
    """Integrate dx/dt = model(x, t) from t0 to t1 in `steps` equal steps (Heun: Euler
    predictor, trapezoidal corrector, two model calls a step; the step ending at t = 0 is an
    Euler step, the velocity of a data point being undefined there)."""
    _check(steps, solver)
    grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64).tolist()
    for a, b in zip(grid[:-1], grid[1:]):
        ta = torch.full((x.shape[0],), a, device=x.device, dtype=torch.float32)
        va = model(x, ta).to(x.dtype)
        pred = x + (b - a) * va
        if solver == "heun" and b != 0.0:  # no corrector at t = 0 (as EDM's Heun)
            vb = model(pred, torch.full_like(ta, b)).to(x.dtype)
            pred = x + (b - a) * 0.5 * (va + vb)
        x = pred
    return x


def flow_sample(
    model: Velocity, x_T: torch.Tensor, steps: int = 50, solver: str = "euler", clip: bool = True
) -> torch.Tensor:
    """Decode: from noise (or `flow_invert`'s x_1) at t = 1 down to the data at t = 0."""
    x0 = ode_solve(model, x_T, 1.0, 0.0, steps, solver)
    return x0.clamp(-1, 1) if clip else x0


def flow_invert(
    model: Velocity, x0: torch.Tensor, steps: int = 50, solver: str = "euler"
) -> torch.Tensor:
    """The ODE run forward, from the data at t = 0 to its x_1 at t = 1."""
    return ode_solve(model, x0, 0.0, 1.0, steps, solver)
