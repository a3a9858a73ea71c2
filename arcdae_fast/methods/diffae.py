"""DiffAE (Preechakul et al. 2022; SPEC section 7): a semantic encoder's code z conditions the
U-Net denoiser by AdaGN; the loss is L_diff only. The encoder sees the clean image and is
trained through the denoiser's loss."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..config.schema import Config, MethodConfig, option
from ..diffusion import VPSchedule
from ..losses import DiffusionLoss
from ..models import SemanticEncoder, build_denoiser, build_encoder
from ..phases import phase
from .base import Method, RandomInputs, evaluating
from .registry import register


@dataclass
class DiffAEConfig(MethodConfig):
    """DiffAE has no keys of its own: its network is model.*, its noise path diffusion.*."""

    name: str = option("diffae", doc="the training method")


@dataclass
class DiffusionInputs(RandomInputs):
    t: torch.Tensor  # (B,) timestep indices
    noise: torch.Tensor  # (B, 3, H, W) the denoiser's noise


@register
class DiffAE(Method):
    name = "diffae"
    Config = DiffAEConfig
    Inputs = DiffusionInputs
    PHASES = ("encoder", "denoiser fwd", "losses")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.encoder = self.make_encoder()
        d = cfg.data
        self.denoiser = build_denoiser(cfg.model, d.resolution, self.encoder.z_dim, d.channels)
        self.schedule = VPSchedule(cfg.diffusion.schedule, cfg.diffusion.T)
        self.diffusion_loss = DiffusionLoss(cfg.diffusion.parameterization)

    def make_encoder(self) -> SemanticEncoder:
        d = self.cfg.data
        return build_encoder(self.cfg.model, d.resolution, channels=d.channels)

    def terms(self) -> tuple[str, ...]:
        return ("loss", "loss_diff")

    def trainable(self) -> nn.ModuleDict:
        return nn.ModuleDict({"encoder": self.encoder, "denoiser": self.denoiser})

    def draw_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None
    ) -> DiffusionInputs:
        b = x0.shape[0] if batch is None else batch
        t = self.schedule.sample_timesteps(b, generator, x0.device)
        noise = torch.randn(
            (b, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype
        )
        return DiffusionInputs(t, noise)

    def denoise(self, x0: torch.Tensor, inp: RandomInputs, z: torch.Tensor) -> torch.Tensor:
        """L_diff of the denoiser conditioned on z, at the inputs' timesteps and noise."""
        with phase("denoiser fwd"):
            x_t = self.schedule.q_sample(x0, inp.t, inp.noise)
            pred = self.denoiser(x_t, inp.t, z)
        with phase("losses"):
            return self.diffusion_loss(pred, x0, inp.noise, *self.schedule.alpha_sigma(inp.t))

    def forward(self, x0: torch.Tensor, inputs: DiffusionInputs) -> dict[str, torch.Tensor]:
        with phase("encoder"):
            z = self.encoder(x0, parts=False).holo
        loss = self.denoise(x0, inputs, z)
        return {"loss": loss, "loss_diff": loss}

    # ---- inference: z = E(x0) at t = 0, DDIM decoding / inversion on the VP schedule ----------
    def encode(self, x0: torch.Tensor, nets: Mapping[str, nn.Module] | None = None) -> torch.Tensor:
        enc = self.nets(nets)["encoder"]
        with evaluating(enc):
            return enc(x0, parts=False).holo

    def decode(self, z, x_T, *, steps, nets=None, solver=None) -> torch.Tensor:
        return self.ddim_decode(None, z, x_T, steps, nets, solver)

    def invert(self, x0, z, *, steps, nets=None) -> torch.Tensor:
        return self.ddim_invert(None, x0, z, steps, nets)
