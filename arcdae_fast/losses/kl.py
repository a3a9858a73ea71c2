"""A diagonal Gaussian posterior: its reparameterised sample and its KL term against the
standard normal prior (DGAE's L_KL; SD-VAE's; DMZ's)."""

from __future__ import annotations

import torch


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over each sample's latent: (B,) float32,
    0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)."""
    m, lv = mean.float(), logvar.float()
    return 0.5 * (m.square() + lv.exp() - 1.0 - lv).flatten(1).sum(1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The sample mean + exp(logvar / 2) * noise of N(mean, exp(logvar)), noise ~ N(0, I)."""
    return mean + (0.5 * logvar).exp() * noise.to(mean.dtype)
