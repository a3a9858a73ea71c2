"""Variance-preserving noise paths (SPEC section 1), the TGA gate omega(t) and the TAPA
strength gamma(t) (SPEC sections 2 and 4), and the parameterizations (eps, v, x0).

Timesteps are integer indices i in {0..T-1}; the continuous time is t = (i + 1) / T.
Tables are built once in float64; look-ups return float32 on the index's device.
"""

from __future__ import annotations

import math

import torch

from ..ops.snr_gate import gate_from_log_snr

SCHEDULES = ("linear", "cosine", "const0.008")
PARAMETERIZATIONS = ("eps", "v", "x0")


def _alphas_cumprod(kind: str, T: int) -> torch.Tensor:
    if kind == "linear":  # DDPM / DiffAE: betas linear in [1e-4, 0.02] for T = 1000
        betas = torch.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T, dtype=torch.float64)
    elif kind == "cosine":  # Nichol & Dhariwal (2021), s = 0.008, betas clipped at 0.999
        s = 0.008
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    elif kind == "const0.008":  # DiffAE's latent DDIM: a constant beta of 0.008 at T = 1000
        betas = torch.full((T,), 0.008 * 1000 / T, dtype=torch.float64)
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    return torch.cumprod(1 - betas, dim=0)


class VPSchedule:
    """alpha_t = sqrt(alphabar_t), sigma_t = sqrt(1 - alphabar_t), SNR = alpha^2 / sigma^2.

    Example:
        >>> s = VPSchedule("linear", 1000)
        >>> alpha, sigma = s.alpha_sigma(torch.tensor([0, 999]))
    """

    def __init__(self, kind: str = "linear", T: int = 1000):
        if not isinstance(T, int) or T < 2:
            raise ValueError(f"T must be an int >= 2, got {T!r}")
        self.kind, self.T = kind, T
        ab = _alphas_cumprod(kind, T)
        self.alphas_cumprod = ab  # float64 (T,)
        self.log_snr_table = torch.log(ab) - torch.log1p(-ab)  # float64, no overflow
        self._cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def prepare(self, device: torch.device) -> None:
        """Build the tables for `device` now. torch.compile guards on the per-device cache,
        so a first build inside a traced forward makes the next call recompile the whole
        step (measured: a second 25-80 s compile); CompiledStep calls this before compiling."""
        self._tables(torch.device(device))

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._cache:
            ab = self.alphas_cumprod
            tabs = (ab.sqrt(), (1 - ab).sqrt(), self.log_snr_table)
            self._cache[device] = tuple(x.to(device=device, dtype=torch.float32) for x in tabs)
        return self._cache[device]

    def _check(self, i: torch.Tensor) -> torch.Tensor:
        if not isinstance(i, torch.Tensor) or i.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"timestep index must be an integer tensor, got {i!r:.80}")
        return i.long()

    def t_continuous(self, i: torch.Tensor) -> torch.Tensor:
        """t = (i + 1) / T in (0, 1], float32."""
        return (self._check(i) + 1).float() / self.T

    def alpha_sigma(self, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = self._check(i)
        a, s, _ = self._tables(i.device)
        return a[i], s[i]

    def log_snr(self, i: torch.Tensor) -> torch.Tensor:
        i = self._check(i)
        return self._tables(i.device)[2][i]

    def snr(self, i: torch.Tensor) -> torch.Tensor:
        return self.log_snr(i).exp()

    def omega(self, i: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """TGA gate omega(t) = sigmoid(log SNR(t) / tau) (SPEC section 4)."""
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        return gate_from_log_snr(self.log_snr(i), tau)

    def gamma(self, i: torch.Tensor, gamma_max: float = 1.0, p: float = 1.0) -> torch.Tensor:
        """TAPA strength gamma(t) = gamma_max * t^p, clamped to [0, 1] (SPEC section 2)."""
        return (gamma_max * self.t_continuous(i) ** p).clamp(0.0, 1.0)

    def q_sample(self, x0: torch.Tensor, i: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t * x0 + sigma_t * noise, per sample."""
        a, s = self.alpha_sigma(i)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return a.view(shape).to(x0.dtype) * x0 + s.view(shape).to(x0.dtype) * noise

    def sample_timesteps(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        return torch.randint(0, self.T, (n,), generator=generator, device=device)


def training_target(
    param: str, x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """What the denoiser regresses for parameterization eps / v / x0."""
    if param == "eps":
        return noise
    if param == "x0":
        return x0
    if param == "v":
        return per_sample(alpha, x0) * noise - per_sample(sigma, x0) * x0
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {param!r}")


def split_prediction(
    param: str, pred: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a network output into (x0_hat, eps_hat)."""
    a, s = per_sample(alpha, x_t), per_sample(sigma, x_t)
    if param == "eps":
        return (x_t - s * pred) / a, pred
    if param == "x0":
        return pred, (x_t - a * pred) / s
    if param == "v":
        return a * x_t - s * pred, s * x_t + a * pred
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {param!r}")


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) values shaped to broadcast against a (B, ...) tensor, in its dtype."""
    return v.view((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)
