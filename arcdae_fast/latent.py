"""DiffAE's second stage: a latent DDIM over a trained autoencoder's codes, so that
unconditional samples are "latent sample -> decode" (SPEC: DiffAE; phizaz/diffae
templates_latent.py, ffhq128_autoenc_latent).

As DiffAE: the codes of the training split (the EMA encoder's, no noise) are standardised per
dimension (latent_znormalize), a VP diffusion with a constant beta of 0.008 over T = 1000
(`const0.008`) is trained on them with an eps-prediction L1 loss by AdamW (lr 1e-4, weight
decay 0.01, batch 256) on the MLPSkipNet (models/latentnet.py), EMA 0.9999, and sampled with
DDIM at 20 steps (latent_T_eval), unclipped, then de-standardised. Codes of any shape are
flattened (DGAE's and DMZ's spatial latents too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, weights
from .config.schema import ConfigError, LatentConfig
from .diffusion import VPSchedule
from .diffusion.solvers import solve
from .ema import frozen_copy
from .models.latentnet import MLPSkipNet

OLD_NAMES = {"steps": "max_steps", "ema": "ema_decay"}  # latent.pt files before the section


class LatentDDIM(nn.Module):
    """The latent denoiser, its EMA, and the codes' per-dimension mean and std."""

    def __init__(
        self,
        shape: tuple[int, ...],
        mean: torch.Tensor,
        std: torch.Tensor,
        settings: LatentConfig,
    ):
        super().__init__()
        settings.check()
        self.shape, self.settings = tuple(shape), settings
        dim = int(torch.tensor(shape).prod())
        with torch.random.fork_rng(devices=[]):  # the initialisation is settings.seed's
            torch.manual_seed(settings.seed)
            self.net = MLPSkipNet(dim, settings.hidden, settings.layers)
        self.ema = frozen_copy(self.net)
        self.register_buffer("mean", mean.reshape(dim).float())
        self.register_buffer("std", std.reshape(dim).float().clamp_min(1e-8))
        self.schedule = VPSchedule(settings.schedule, settings.T)
        self.path: Path | None = None  # the file it was loaded from

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        return (z.reshape(z.shape[0], -1).float() - self.mean) / self.std

    def denormalise(self, u: torch.Tensor) -> torch.Tensor:
        return (u * self.std + self.mean).reshape(u.shape[0], *self.shape)

    def loss(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The eps-prediction loss on a batch of (raw) codes."""
        u = self.normalise(z)
        t = self.schedule.sample_timesteps(u.shape[0], generator, u.device)
        noise = torch.randn(u.shape, generator=generator, device=u.device)
        pred = self.net(self.schedule.q_sample(u, t, noise), t)
        err = pred - noise
        return err.abs().mean() if self.settings.loss == "l1" else err.square().mean()

    @torch.no_grad()
    def sample(
        self,
        n: int,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        solver: str = "ddim",
        net: nn.Module | None = None,
    ) -> torch.Tensor:
        """n codes (raw scale, the autoencoder's code shape) from the EMA net by default."""
        net = self.ema if net is None else net
        dev = self.mean.device
        u_T = torch.randn((n, self.mean.numel()), generator=generator, device=dev)
        was = net.training
        net.eval()
        try:
            u = solve(
                lambda u, i, _z: net(u, i),
                None,
                self.schedule,
                u_T,
                steps or self.settings.sample_steps,
                solver,
                "eps",
                clip=False,
            )
        finally:
            net.train(was)
        return self.denormalise(u)

    def state(self) -> dict:
        return {
            "shape": list(self.shape),
            "settings": dataclasses.asdict(self.settings),
            "weights": self.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict) -> LatentDDIM:
        w = state["weights"]
        settings = {OLD_NAMES.get(k, k): v for k, v in state["settings"].items()}
        m = cls(tuple(state["shape"]), w["mean"], w["std"], LatentConfig(**settings))
        m.load_state_dict(w)
        return m


def load(path: str | Path, device: torch.device | str = "cpu") -> LatentDDIM:
    """The latent DDIM train_latent wrote (RUN/latent/latent.pt), on `device`, in eval mode."""
    path = Path(path)
    if path.suffix == weights.SUFFIX:  # an inference folder's (export --format safetensors)
        state = weights.read_latent_state(path)
    else:
        state = checkpoint.load(path, what="latent model")
    m = LatentDDIM.from_state(state).to(device).eval()
    m.path = Path(path)
    return m


def find(run: str | Path, latent: str | Path | None, device: torch.device) -> LatentDDIM | None:
    """`latent` (which must exist), else RUN/latent/latent.pt when there is one, else None."""
    path = Path(latent) if latent else Path(run) / "latent" / "latent.pt"
    if not latent and weights.is_inference_folder(run):
        path = Path(run) / weights.LATENT
    if path.is_file():
        return load(path, device)
    if latent:
        raise ConfigError(f"no latent model {path} (python -m arcdae_fast.train_latent writes it)")
    return None


CodeSampler = Callable[[int, torch.Generator, torch.device], torch.Tensor]


def no_sampler(method_name: str) -> str:
    """Why a run cannot generate (code_sampler gave None), and what to do."""
    return (
        f"method {method_name} has no prior, and this run has no latent DDIM: train one with "
        "python -m arcdae_fast.train_latent --run RUN (writes RUN/latent/latent.pt)"
    )


def code_sampler(method, latent: LatentDDIM | None, steps: int | None = None) -> CodeSampler | None:
    """How a run draws codes for unconditional generation, (n, generator, device) -> z: the
    method's own prior when it has one (DMZ), else the run's latent DDIM (at `steps` DDIM
    steps, default its own), else None."""
    prior = getattr(method, "sample_prior", None)
    if prior is not None:
        return prior
    if latent is None:
        return None
    return lambda n, g, _device: latent.sample(n, steps, g)
