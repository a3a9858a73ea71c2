"""The denoising loss (SPEC section 1): L_diff = mean ||pred - target||^2 over every element,
in float32, the target following the parameterization (eps, v or x0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion import PARAMETERIZATIONS, training_target


class DiffusionLoss:
    """`loss(pred, x0, noise, alpha, sigma)`: pred (B, C, H, W) the network output; alpha,
    sigma (B,) the schedule at each sample's timestep. Uniform weight over timesteps
    (DiffAE's)."""

    def __init__(self, parameterization: str = "eps"):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        self.parameterization = parameterization

    def __call__(
        self,
        pred: torch.Tensor,
        x0: torch.Tensor,
        noise: torch.Tensor,
        alpha: torch.Tensor,
        sigma: torch.Tensor,
    ) -> torch.Tensor:
        target = training_target(self.parameterization, x0, noise, alpha, sigma)
        return F.mse_loss(pred.float(), target.float())
