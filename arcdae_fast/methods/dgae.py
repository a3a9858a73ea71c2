"""DGAE (Diffusion-Guided Autoencoder, arXiv 2506.09644; SPEC section 7): an SD-VAE-style
encoder outputs the mean and log-variance of a spatial latent z (c x R/f x R/f); the decoder
is an ADM U-Net whose input is the noisy image with z, upsampled by nearest neighbour,
concatenated along channels (3 + c channels; its AdaGN carries time only). On the
rectified-flow path x_t = (1 - t) x0 + t eps it predicts v = eps - x0:

    L = alpha * L_DSM + beta * L_KL + eta * L_LPIPS
    L_DSM   = mean ||v_hat - v||^2
    L_KL    = KL(q(z | x0) || N(0, I)), summed over the latent, averaged over the batch
    L_LPIPS = LPIPS_VGG(x0', x0) on the one-step estimate x0' = x_t - t v_hat (float32)

Training uses the reparameterised sample z = mean + exp(logvar / 2) n, inference the mean.
Decoding integrates the flow ODE from t = 1 (Euler or Heun, N steps). `method.path=vp` puts
the same autoencoder on the VP schedule instead (diffusion.*: eps / v / x0, DDIM decoding;
x0' from the parameterization).

What the SPEC does not fix and is configurable here: the weights beta and eta (defaults: SD-VAE's
KL weight 1e-6 and perceptual weight 1), the density of t (uniform; logit-normal available),
the ODE solver (Euler). The LPIPS network needs its pretrained files (nn/weights.py) unless
eta = 0; `lpips_weights: random` builds it randomly initialised (tests and profiling only: that
is not LPIPS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import Config, ConfigError, MethodConfig, option
from ..diffusion import VPSchedule, split_prediction
from ..diffusion.flow import DENSITIES, SOLVERS, TIME_SCALE, FlowPath, flow_invert, flow_sample
from ..losses import DiffusionLoss, gaussian_kl, reparameterize
from ..models import VAEEncoder, build_denoiser, build_vae_encoder
from ..models.layers import upsample
from ..nn.lpips import LPIPS
from ..phases import phase
from .base import Method, RandomInputs, evaluating
from .registry import register


@dataclass
class DGAEConfig(MethodConfig):
    name: str = option("dgae", doc="the training method")
    latent_channels: int = option(16, min=1, doc="c: channels of the spatial latent")
    downsample: int = option(
        16,
        min=1,
        doc="f: the latent is c x R/f x R/f; the encoder (model.encoder.channel_mult) has "
        "log2(f) + 1 levels",
    )
    alpha: float = option(1.0, min=0.0, doc="weight of the denoising (flow matching) loss")
    beta: float = option(1e-6, min=0.0, doc="weight of the KL term (SD-VAE's 1e-6)")
    eta: float = option(1.0, min=0.0, doc="weight of LPIPS on the one-step estimate; 0: none")
    lpips_net: str = option("vgg", choices=("vgg", "alex"), doc="LPIPS backbone (DGAE: VGG)")
    lpips_weights: str = option(
        "pretrained",
        choices=("pretrained", "random"),
        doc="pretrained: the files in eval.weights_dir (nn/weights.py); random: a randomly "
        "initialised backbone (tests and profiling only, not LPIPS)",
    )
    path: str = option(
        "flow",
        choices=("flow", "vp"),
        doc="flow: rectified flow, v-prediction; vp: the VP schedule of diffusion.*",
    )
    t_density: str = option("uniform", choices=DENSITIES, doc="density of the flow's t")
    t_loc: float = option(0.0, doc="logit-normal location")
    t_scale: float = option(1.0, min=1e-6, doc="logit-normal scale")
    solver: str = option("euler", choices=SOLVERS, doc="the flow path's ODE sampler")
    sample_latent: bool = option(
        True, doc="train on the reparameterised sample of z (false: on its mean)"
    )

    def check(self, cfg: Config) -> None:
        check_downsample(cfg, self.downsample)
        if self.eta > 0:
            side = {"vgg": 16, "alex": 32}[self.lpips_net]
            if cfg.data.resolution < side:
                raise ConfigError(
                    f"config: LPIPS ({self.lpips_net}) needs images of at least {side} px, "
                    f"data.resolution is {cfg.data.resolution}; set method.eta=0"
                )


def check_downsample(cfg: Config, f: int) -> None:
    """method.downsample = f must match the VAE encoder's levels and divide the resolution."""
    levels = len(cfg.model.encoder.channel_mult)
    if 2 ** (levels - 1) != f:
        want = f.bit_length()  # log2(f) + 1 for a power of two
        hint = (
            f"give model.encoder.channel_mult {want} levels"
            if f & (f - 1) == 0
            else ("f must be a power of two")
        )
        raise ConfigError(
            f"config: method.downsample={f} but model.encoder.channel_mult "
            f"{list(cfg.model.encoder.channel_mult)} has {levels} levels "
            f"(f = {2 ** (levels - 1)}); {hint}"
        )
    if cfg.data.resolution % f:
        raise ConfigError(
            f"config: data.resolution={cfg.data.resolution} is not divisible by "
            f"method.downsample={f}"
        )


@dataclass
class DGAEInputs(RandomInputs):
    t: torch.Tensor  # (B,) flow: float times in [0, 1]; vp: timestep indices
    noise: torch.Tensor  # (B, 3, H, W) the path's noise
    latent_noise: torch.Tensor  # (B, c, H/f, W/f) the reparameterisation's


def concat_condition(x_t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """[x_t, nearest-upsampled z] along channels: the decoder's input (B, 3 + c, H, W)."""
    f = x_t.shape[-1] // z.shape[-1]  # the encoder's downsampling (config-checked: exact)
    return torch.cat([x_t, upsample(z.to(x_t.dtype), f)], dim=1)


@register
class DGAE(Method):
    name = "dgae"
    Config = DGAEConfig
    Inputs = DGAEInputs
    PHASES = ("encoder", "denoiser fwd", "losses")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        m, res = self.mcfg, cfg.data.resolution
        c = cfg.data.channels
        self.encoder: VAEEncoder = build_vae_encoder(cfg.model, res, m.latent_channels, c)
        self.denoiser = build_denoiser(cfg.model, res, None, c, extra_in=m.latent_channels)
        self.flow = FlowPath(m.t_density, m.t_loc, m.t_scale) if m.path == "flow" else None
        self.schedule = VPSchedule(cfg.diffusion.schedule, cfg.diffusion.T)
        self.diffusion_loss = DiffusionLoss(cfg.diffusion.parameterization)
        perceptual = None
        if m.eta > 0:
            if m.lpips_weights == "pretrained":
                perceptual = LPIPS.from_files(cfg.eval.weights_dir, m.lpips_net)
            else:
                perceptual = LPIPS(m.lpips_net)
        # a fixed network: outside the module tree (not in checkpoints, never trained), moved
        # with the method by _apply
        object.__setattr__(self, "perceptual", perceptual)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self.perceptual is not None:
            self.perceptual._apply(fn, recurse)
        return self

    def terms(self) -> tuple[str, ...]:
        return ("loss", "loss_dsm", "loss_kl") + (("loss_lpips",) if self.mcfg.eta > 0 else ())

    def trainable(self) -> nn.ModuleDict:
        return nn.ModuleDict({"encoder": self.encoder, "denoiser": self.denoiser})

    def draw_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None
    ) -> DGAEInputs:
        b = x0.shape[0] if batch is None else batch
        if self.flow is not None:
            t = self.flow.sample_t(b, generator, x0.device)
        else:
            t = self.schedule.sample_timesteps(b, generator, x0.device)
        kw = dict(generator=generator, device=x0.device, dtype=x0.dtype)
        noise = torch.randn((b, *x0.shape[1:]), **kw)
        latent = torch.randn((b, *self.encoder.latent_shape(x0.shape[-1])), **kw)
        return DGAEInputs(t, noise, latent)

    def _net_time(self, t: torch.Tensor) -> torch.Tensor:
        return t * TIME_SCALE if self.flow is not None else t

    def forward(self, x0: torch.Tensor, inputs: DGAEInputs) -> dict[str, torch.Tensor]:
        m, t = self.mcfg, inputs.t
        with phase("encoder"):
            mean, logvar = self.encoder(x0)
            z = mean
            if m.sample_latent:
                z = reparameterize(mean, logvar, inputs.latent_noise)
        with phase("denoiser fwd"):
            if self.flow is not None:
                x_t = self.flow.x_t(x0, t, inputs.noise)
            else:
                x_t = self.schedule.q_sample(x0, t, inputs.noise)
            pred = self.denoiser(concat_condition(x_t, z), self._net_time(t))
        with phase("losses"):
            if self.flow is not None:
                target = self.flow.target(x0, inputs.noise)
                dsm = F.mse_loss(pred.float(), target.float())
            else:
                a_s = self.schedule.alpha_sigma(t)
                dsm = self.diffusion_loss(pred, x0, inputs.noise, *a_s)
            kl = gaussian_kl(mean, logvar).mean()
            loss = m.alpha * dsm + m.beta * kl
            out = {"loss_dsm": dsm, "loss_kl": kl}
            if self.perceptual is not None:
                if self.flow is not None:
                    x0_hat = self.flow.x0_estimate(x_t.float(), t, pred.float())
                else:
                    param = self.cfg.diffusion.parameterization
                    x0_hat = split_prediction(param, pred.float(), x_t.float(), *a_s)[0]
                lp = self.perceptual(x0_hat, x0).mean()
                out["loss_lpips"] = lp
                loss = loss + m.eta * lp
        return {"loss": loss, **out}

    # ---- inference: z = the posterior mean; decoding by the flow ODE (or DDIM on vp) --------
    def posterior(
        self, x0: torch.Tensor, nets: Mapping[str, nn.Module] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of q(z | x0), each (B, c, R/f, R/f)."""
        enc = self.nets(nets)["encoder"]
        with evaluating(enc):
            return enc(x0)

    def encode(self, x0: torch.Tensor, nets: Mapping[str, nn.Module] | None = None) -> torch.Tensor:
        return self.posterior(x0, nets)[0]

    def _velocity(self, den: nn.Module, z: torch.Tensor):
        return lambda x, t: den(concat_condition(x, z), self._net_time(t))

    @staticmethod
    def _vp_denoiser(den: nn.Module):
        """The samplers' denoiser (x_t, i, z) on the VP path: z concatenated to x_t."""
        return lambda x, i, z: den(concat_condition(x, z), i)

    def sampler_fn(self, den: nn.Module):
        """(x_t, i, z) on the VP path; (x_t, t, z), t in [0, 1], on the flow path."""
        if self.flow is None:
            return self._vp_denoiser(den)
        return lambda x, t, z: self._velocity(den, z)(x, t)

    def decode(self, z, x_T, *, steps, nets=None, solver=None) -> torch.Tensor:
        if self.flow is None:
            return self.ddim_decode(self._vp_denoiser, z, x_T, steps, nets, solver)
        den = self.nets(nets)["denoiser"]
        with evaluating(den):
            return flow_sample(self._velocity(den, z), x_T, steps, solver or self.mcfg.solver)

    def invert(self, x0, z, *, steps, nets=None) -> torch.Tensor:
        if self.flow is None:
            return self.ddim_invert(self._vp_denoiser, x0, z, steps, nets)
        den = self.nets(nets)["denoiser"]
        with evaluating(den):
            return flow_invert(self._velocity(den, z), x0, steps, self.mcfg.solver)
