"""DMZ (Proszewska, Malkin, Siddharth, arXiv 2506.00136; SPEC section 7): a diffusion
autoencoder with a variational latent. The encoder gives a Gaussian posterior q(z | x0) whose
prior N(0, I) can be sampled directly, so generation needs no second-stage latent model
(z ~ N(0, I), then decode); the denoiser is conditioned on a reparameterised sample:

    L = L_diff(x0 | z) + beta * KL(q(z | x0) || N(0, I)),  z = mean + exp(logvar / 2) n

Only the paper's abstract is available here. What follows the abstract: the design space is
the latent's shape and the conditioning method, a Gaussian posterior with a directly
sampleable prior, generation from the prior, few-step decoding, representations and domain
transfer. Ours (every one a key): the two latents, `vector` (the semantic encoder, its head
giving the mean and log-variance of a model.encoder.z_dim-wide z) and `spatial` (DGAE's
SD-VAE-style encoder, c x R/f x R/f); the conditioning, `adagn` (vector z through AdaGN, as
DiffAE) or `concat` (z upsampled by nearest neighbour, a vector one tiled, concatenated to
x_t, as DGAE); the VP schedule with DDIM decoding; beta (1e-4); log-variance clamped to
[-30, 20] (SD-VAE's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..config.schema import Config, ConfigError, MethodConfig, option
from ..diffusion import VPSchedule
from ..losses import DiffusionLoss, gaussian_kl, reparameterize
from ..models import build_denoiser, build_encoder, build_vae_encoder
from ..models.vae import LOGVAR_RANGE
from ..phases import phase
from .base import Method, RandomInputs, evaluating
from .dgae import check_downsample, concat_condition
from .registry import register


@dataclass
class DMZConfig(MethodConfig):
    name: str = option("dmz", doc="the training method")
    latent: str = option(
        "vector",
        choices=("vector", "spatial"),
        doc="vector: z of model.encoder.z_dim (semantic encoder); spatial: c x R/f x R/f",
    )
    cond: str = option(
        "adagn",
        choices=("adagn", "concat"),
        doc="adagn: z modulates the U-Net (vector z); concat: z upsampled and concatenated",
    )
    latent_channels: int = option(4, min=1, doc="spatial: c, the latent's channels")
    downsample: int = option(
        4, min=1, doc="spatial: f; model.encoder.channel_mult has log2(f) + 1 levels"
    )
    beta: float = option(1e-4, min=0.0, doc="weight of the KL term")
    sample_latent: bool = option(
        True, doc="condition on the reparameterised sample (false: on the mean)"
    )

    def check(self, cfg: Config) -> None:
        if self.latent == "spatial":
            if self.cond == "adagn":
                raise ConfigError(
                    "config: method.latent=spatial conditions by concatenation: set "
                    "method.cond=concat (AdaGN takes a vector z)"
                )
            check_downsample(cfg, self.downsample)


@dataclass
class DMZInputs(RandomInputs):
    t: torch.Tensor  # (B,) timestep indices
    noise: torch.Tensor  # (B, 3, H, W) the denoiser's noise
    latent_noise: torch.Tensor  # (B, *latent shape) the reparameterisation's


@register
class DMZ(Method):
    name = "dmz"
    Config = DMZConfig
    Inputs = DMZInputs
    PHASES = ("encoder", "denoiser fwd", "losses")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        o, res, c = self.mcfg, cfg.data.resolution, cfg.data.channels
        if o.latent == "vector":
            z_dim = cfg.model.encoder.z_dim  # the head gives mean and log-variance
            wide = dataclasses.replace(cfg.model.encoder, z_dim=2 * z_dim)
            self.encoder = build_encoder(
                dataclasses.replace(cfg.model, encoder=wide), res, channels=c
            )
            self.latent_shape = (z_dim,)
        else:
            self.encoder = build_vae_encoder(cfg.model, res, o.latent_channels, c)
            self.latent_shape = self.encoder.latent_shape(res)
        channels = self.latent_shape[0]
        if o.cond == "adagn":
            self.denoiser = build_denoiser(cfg.model, res, channels, c)
        else:
            self.denoiser = build_denoiser(cfg.model, res, None, c, extra_in=channels)
        self.schedule = VPSchedule(cfg.diffusion.schedule, cfg.diffusion.T)
        self.diffusion_loss = DiffusionLoss(cfg.diffusion.parameterization)

    def terms(self) -> tuple[str, ...]:
        return ("loss", "loss_diff", "loss_kl")

    def trainable(self) -> nn.ModuleDict:
        return nn.ModuleDict({"encoder": self.encoder, "denoiser": self.denoiser})

    def draw_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None
    ) -> DMZInputs:
        b = x0.shape[0] if batch is None else batch
        kw = dict(generator=generator, device=x0.device, dtype=x0.dtype)
        t = self.schedule.sample_timesteps(b, generator, x0.device)
        noise = torch.randn((b, *x0.shape[1:]), **kw)
        return DMZInputs(t, noise, torch.randn((b, *self.latent_shape), **kw))

    def _posterior(self, enc: nn.Module, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mcfg.latent == "spatial":
            return enc(x0)
        mean, logvar = enc(x0, parts=False).holo.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def sampler_fn(self, den: nn.Module):
        """The denoiser as the samplers call it, (x_t, i, z) -> prediction."""
        if self.mcfg.cond == "adagn":
            return den
        return lambda x, i, z: den(concat_condition(x, _as_map(z)), i)

    def forward(self, x0: torch.Tensor, inputs: DMZInputs) -> dict[str, torch.Tensor]:
        o = self.mcfg
        with phase("encoder"):
            mean, logvar = self._posterior(self.encoder, x0)
            z = reparameterize(mean, logvar, inputs.latent_noise) if o.sample_latent else mean
        with phase("denoiser fwd"):
            x_t = self.schedule.q_sample(x0, inputs.t, inputs.noise)
            pred = self.sampler_fn(self.denoiser)(x_t, inputs.t, z)
        with phase("losses"):
            diff = self.diffusion_loss(pred, x0, inputs.noise, *self.schedule.alpha_sigma(inputs.t))
            kl = gaussian_kl(mean, logvar).mean()
        return {"loss": diff + o.beta * kl, "loss_diff": diff, "loss_kl": kl}

    # ---- inference: z = the posterior mean; generation from the prior ------------------------
    def posterior(
        self, x0: torch.Tensor, nets: Mapping[str, nn.Module] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of q(z | x0), each (B, *latent_shape)."""
        enc = self.nets(nets)["encoder"]
        with evaluating(enc):
            return self._posterior(enc, x0)

    def encode(self, x0: torch.Tensor, nets: Mapping[str, nn.Module] | None = None) -> torch.Tensor:
        return self.posterior(x0, nets)[0]

    def sample_prior(
        self, n: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """n codes from the prior N(0, I): decode them for unconditional samples."""
        return torch.randn((n, *self.latent_shape), generator=generator, device=device)

    def decode(self, z, x_T, *, steps, nets=None, solver=None) -> torch.Tensor:
        return self.ddim_decode(self.sampler_fn, z, x_T, steps, nets, solver)

    def invert(self, x0, z, *, steps, nets=None) -> torch.Tensor:
        return self.ddim_invert(self.sampler_fn, x0, z, steps, nets)


def _as_map(z: torch.Tensor) -> torch.Tensor:
    """A vector code (B, D) as a 1 x 1 map (B, D, 1, 1) for concatenation (upsampling tiles
    it); a spatial one as it is."""
    return z[:, :, None, None] if z.dim() == 2 else z
