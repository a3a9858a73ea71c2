"""Samplers on a VP schedule, conditioned on z, by name (`SOLVERS`):

- `ddim`: ours (samplers.ddim_sample), deterministic DDIM (eta = 0), the training-time and
  evaluation sampler, and the only one with an inversion (samplers.ddim_invert);
- `dpm++2m`: DPM-Solver++ (2M, multistep second order; Lu et al. 2022), for few steps;
- `heun`: Heun's second-order method on the probability-flow ODE (Karras et al. 2022), "the
  ODE sampler": two network calls per step but the last.

The two higher-order solvers are diffusers' schedulers (DPMSolverMultistepScheduler,
HeunDiscreteScheduler), given our schedule's betas and parameterization, on their own
"linspace" timesteps (which end at about T/steps and then step to the clean image; on our
DDIM timesteps, which end at index 0, DPM-Solver++(2M) measured erratic: its last
extrapolation spans a very unequal log-SNR step), rather than solvers written here; diffusers is an
optional dependency (the `infer` extra) and asking for them without it is an error naming it.
tests/test_solvers.py checks that our DDIM equals diffusers' first-order DPM-Solver++ (which
is DDIM, Lu et al. 2022) on the same timesteps, and that every solver, in each
parameterization, converges to the exact probability-flow ODE solution on Gaussian data.
"""

from __future__ import annotations

import torch

from .samplers import Denoiser, ddim_sample, ddim_timesteps
from .schedules import VPSchedule

SOLVERS = ("ddim", "dpm++2m", "heun")
_PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def _diffusers():
    try:
        import diffusers
    except ImportError as e:
        raise ImportError(
            "the dpm++2m and heun solvers are diffusers' schedulers: pip install diffusers "
            f"(or the project's [infer] extra); ddim needs nothing ({e})"
        ) from e
    return diffusers


def diffusers_scheduler(solver: str, schedule: VPSchedule, param: str, order: int = 2):
    """The diffusers scheduler of `solver` on our schedule (its betas, T, parameterization)."""
    d = _diffusers()
    ab = schedule.alphas_cumprod
    betas = 1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
    common = dict(
        num_train_timesteps=schedule.T,
        trained_betas=betas.numpy(),
        prediction_type=_PREDICTION[param],
    )
    if solver == "dpm++2m":
        return d.DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=order, final_sigmas_type="zero"
        )
    if solver == "heun":
        return d.HeunDiscreteScheduler(**common)
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")


@torch.no_grad()
def solve(
    model: Denoiser,
    z: torch.Tensor,
    schedule: VPSchedule,
    x_T: torch.Tensor,
    steps: int = 50,
    solver: str = "ddim",
    param: str = "eps",
    clip: bool = True,
) -> torch.Tensor:
    """x_T -> x_0 with `solver` in `steps` timesteps (ddim_timesteps), model(x_t, i, z).
    `clip` clamps DDIM's x0 estimates to [-1, 1]; the diffusers solvers do not clip."""
    if solver == "ddim":
        return ddim_sample(model, z, schedule, x_T, steps=steps, param=param, clip=clip)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return scheduler_loop(diffusers_scheduler(solver, schedule, param), model, z, x_T, steps)


def scheduler_loop(
    sched, model: Denoiser, z, x_T: torch.Tensor, steps: int, ours: bool = False
) -> torch.Tensor:
    """A diffusers scheduler's sampling loop, float64 state, on its own `steps` timesteps
    (`ours`: on our DDIM timesteps, ddim_timesteps, descending)."""
    if ours:
        seq = ddim_timesteps(sched.config.num_train_timesteps, steps)
        sched.set_timesteps(timesteps=seq[::-1], device=x_T.device)
    else:
        sched.set_timesteps(num_inference_steps=steps, device=x_T.device)
    x = x_T.double() * sched.init_noise_sigma
    for t in sched.timesteps:
        i = torch.full((x.shape[0],), int(round(float(t))), device=x.device, dtype=torch.long)
        inp = sched.scale_model_input(x, t).to(x_T.dtype)
        pred = model(inp, i, z).double()
        x = sched.step(pred, t, x).prev_sample
    return x.to(x_T.dtype)
