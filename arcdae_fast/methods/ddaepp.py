"""DDAE++ (Xiang et al. 2025; SPEC section 7): self-conditioning with contrastive
self-distillation. No separate encoder: the denoiser's own features of x_t at one stage of
its encoding half are pooled into a compact code c(x_t, t) that conditions its decoding
half by AdaGN (models/selfcond.py). An EMA teacher of the whole denoiser computes the code
of another view (the augmentation op at `view_strength`, noised at the teacher's timestep),
and the student's code is aligned to it by InfoNCE (`snr_weighted_infonce`, the teacher's
codes as keys):

    L = L_diff + lambda_align * NCE(c_student, c_teacher; w)

What the SPEC fixes: self-conditioning from the encoding half / middle block, AdaGN on a
U-Net, an EMA teacher on another view, InfoNCE, readout at a chosen (layer, t). Ours, and
configurable: the tapped stage (middle), the pool (mean; or one attention-pool query), the
code width, whether the conditioning passes gradient to the code (yes), the view (the TAPA
augmentation at strength 0.5, the teacher at the student's timestep), the per-row weight
(omega(t), the SNR gate, or 1), and decoding from a given code: the code conditions the
decoding half at every sampler step (z = None: each step's own code, an unconditional
model).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config.schema import Config, ConfigError, MethodConfig, option
from ..diffusion import VPSchedule
from ..ema import ema_update, frozen_copy
from ..losses import DiffusionLoss, InfoNCE
from ..models import build_denoiser
from ..models.selfcond import POOLS, SelfCondUNet
from ..ops import sample_augment_params, timestep_augment
from ..phases import phase
from .base import Method, RandomInputs, evaluating
from .registry import register


@dataclass
class DDAEPPConfig(MethodConfig):
    name: str = option("ddaepp", doc="the training method")
    NETWORKS: ClassVar[tuple[str, ...]] = ("denoiser",)  # no separate encoder
    code_layer: str = option(
        "middle", doc="the denoiser stage whose features make the code: middle or down.K"
    )
    code_pool: str = option("mean", choices=POOLS, doc="pooling of the tapped features")
    code_dim: int = option(512, min=1, doc="width of the self-code c")
    pool_key_dim: int = option(64, min=1, doc="d_k of the attention pool's query")
    stop_grad: bool = option(
        False, doc="the denoising loss does not reach the code through the conditioning"
    )
    lambda_align: float = option(
        1.0, min=0.0, doc="weight of the contrastive self-distillation; 0: no teacher"
    )
    tau_nce: float = option(0.1, min=1e-6)
    snr_weight: bool = option(True, doc="weight each row's InfoNCE by omega(t); false: 1")
    tau_snr: float = option(1.0, min=1e-6)
    teacher_momentum: float = option(0.999, min=0.0, max=1.0)
    teacher_t: int = option(
        -1, min=-1, doc="timestep index of the teacher's view; -1: the student's"
    )
    view_strength: float = option(
        0.5, min=0.0, max=1.0, doc="augmentation strength of the teacher's view (TAPA's s)"
    )
    gather_negatives: bool = option(True, doc="multi-process: negatives from every rank")
    encode_t: int = option(50, min=0, doc="timestep index at which encode() reads the code")
    encode_layer: str = option(
        "code", doc="what encode() reads: code (the self-code), or a stage's mean features"
    )
    encode_seed: int = option(0, min=0, doc="seed of the noise encode() adds at encode_t")

    def check(self, cfg: Config) -> None:
        names = layer_names(cfg)
        if self.code_layer not in names:
            raise ConfigError(
                f"config: method.code_layer={self.code_layer!r} is not a stage of the "
                f"denoiser's encoding half; stages: {', '.join(names)}"
            )
        if self.encode_layer not in ("code", *names):
            raise ConfigError(
                f"config: method.encode_layer={self.encode_layer!r}: code or one of "
                f"{', '.join(names)}"
            )
        T = cfg.diffusion.T
        for key, t in (("teacher_t", self.teacher_t), ("encode_t", self.encode_t)):
            if t >= T:
                raise ConfigError(f"config: method.{key}={t} must be < diffusion.T={T}")


def layer_names(cfg: Config) -> list[str]:
    """The denoiser's tappable stages for this config: down.0 (the input conv) ... middle."""
    d = cfg.model.denoiser
    n = 1 + len(d.channel_mult) * d.num_res_blocks + len(d.channel_mult) - 1
    return [f"down.{i}" for i in range(n)] + ["middle"]


@dataclass
class DDAEPPInputs(RandomInputs):
    t: torch.Tensor  # (B,) the student's timestep indices
    noise: torch.Tensor  # (B, 3, H, W) the denoiser's noise
    t_teacher: torch.Tensor | None = None  # (B,) the teacher's view's timesteps
    noise_teacher: torch.Tensor | None = None  # (B, 3, H, W)
    aug_params: torch.Tensor | None = None  # (B, 9) the teacher's view


@register
class DDAEPP(Method):
    name = "ddaepp"
    Config = DDAEPPConfig
    Inputs = DDAEPPInputs
    PHASES = ("augmentation", "teacher", "denoiser fwd", "losses")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        o = self.mcfg
        d = cfg.data
        unet = build_denoiser(cfg.model, d.resolution, o.code_dim, d.channels, cond_blocks="up")
        self.denoiser = SelfCondUNet(unet, o.code_layer, o.code_dim, o.code_pool, o.pool_key_dim)
        self.schedule = VPSchedule(cfg.diffusion.schedule, cfg.diffusion.T)
        self.diffusion_loss = DiffusionLoss(cfg.diffusion.parameterization)
        self.teacher = frozen_copy(self.denoiser) if o.lambda_align > 0 else None
        self.nce = InfoNCE(o.tau_nce)

    def terms(self) -> tuple[str, ...]:
        return (
            ("loss", "loss_diff", "loss_align")
            if self.teacher is not None
            else ("loss", "loss_diff")
        )

    def trainable(self) -> nn.ModuleDict:
        return nn.ModuleDict({"denoiser": self.denoiser})

    def targets(self) -> dict[str, nn.Module]:
        return {} if self.teacher is None else {"teacher": self.teacher}

    @torch.no_grad()
    def update_targets(self) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, self.denoiser, self.mcfg.teacher_momentum)

    def distribute(self, gather) -> None:
        self.gather = gather if self.mcfg.gather_negatives else None

    def draw_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None
    ) -> DDAEPPInputs:
        o = self.mcfg
        b = x0.shape[0] if batch is None else batch
        shape, dev = (b, *x0.shape[1:]), x0.device
        t = self.schedule.sample_timesteps(b, generator, dev)
        noise = torch.randn(shape, generator=generator, device=dev, dtype=x0.dtype)
        if self.teacher is None:
            return DDAEPPInputs(t, noise)
        t_teacher = t.clone() if o.teacher_t < 0 else torch.full_like(t, o.teacher_t)
        noise_teacher = torch.randn(shape, generator=generator, device=dev, dtype=x0.dtype)
        strength = torch.full((b,), o.view_strength, device=dev)
        params = sample_augment_params(strength, generator)
        return DDAEPPInputs(t, noise, t_teacher, noise_teacher, params)

    def forward(self, x0: torch.Tensor, inputs: DDAEPPInputs) -> dict[str, torch.Tensor]:
        o, inp = self.mcfg, inputs
        alpha, sigma = self.schedule.alpha_sigma(inp.t)
        with phase("denoiser fwd"):
            x_t = self.schedule.q_sample(x0, inp.t, inp.noise)
            pred, code = self.denoiser(x_t, inp.t, o.stop_grad)
        with phase("losses"):
            loss_diff = self.diffusion_loss(pred, x0, inp.noise, alpha, sigma)
        out = {"loss": loss_diff, "loss_diff": loss_diff}
        if self.teacher is None:
            return out
        with phase("augmentation"):
            a_t, s_t = self.schedule.alpha_sigma(inp.t_teacher)
            view, _ = timestep_augment(x0, inp.aug_params, a_t, s_t, inp.noise_teacher)
        with torch.no_grad(), phase("teacher"):
            key = self.teacher.code(view, inp.t_teacher)
        with phase("losses"):
            w = self.schedule.omega(inp.t, o.tau_snr) if o.snr_weight else None
            out["loss_align"] = self.nce(code, key, w, self.gather)
            out["loss"] = loss_diff + o.lambda_align * out["loss_align"]
        return out

    # ---- inference ---------------------------------------------------------------------------
    def encode(
        self,
        x0: torch.Tensor,
        nets: Mapping[str, nn.Module] | None = None,
        *,
        t: int | None = None,
        layer: str | None = None,
    ) -> torch.Tensor:
        """The representation of x0 read at (layer, t) (defaults: method.encode_layer,
        method.encode_t): x0 noised to x_t with fixed-seed noise (method.encode_seed), then
        the self-code ("code") or a stage's mean-pooled features."""
        o, den = self.mcfg, self.nets(nets)["denoiser"]
        t = o.encode_t if t is None else t
        layer = o.encode_layer if layer is None else layer
        g = torch.Generator(x0.device).manual_seed(o.encode_seed)
        noise = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
        i = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
        with evaluating(den):
            x_t = self.schedule.q_sample(x0, i, noise)
            return den.code(x_t, i) if layer == "code" else den.features(x_t, i, layer)

    def readouts(self) -> list[str]:
        """The layers encode() can read (the probe's layer sweep)."""
        return ["code", *layer_names(self.cfg)]

    @torch.no_grad()
    def reconstruct(self, x0, *, steps, nets=None, x_T=None) -> torch.Tensor:
        """decode(encode's self-code at method.encode_t) from the inverted x_T (or x_T)."""
        z = self.encode(x0, nets, layer="code")
        if x_T is None:
            x_T = self.invert(x0, z, steps=steps, nets=nets)
        return self.decode(z, x_T, steps=steps, nets=nets)

    def sampler_fn(self, den: SelfCondUNet):
        return _code_denoiser(den)

    def decode(self, z, x_T, *, steps, nets=None, solver=None) -> torch.Tensor:
        return self.ddim_decode(_code_denoiser, z, x_T, steps, nets, solver)

    def invert(self, x0, z, *, steps, nets=None) -> torch.Tensor:
        return self.ddim_invert(_code_denoiser, x0, z, steps, nets)


def _code_denoiser(den: SelfCondUNet):
    """The samplers' denoiser: the decoding half on the given code (None: x_t's own)."""
    return den.denoise
