"""The ArcDAE objective (SPEC section 4), composed from the public ops.

    L = L_diff + lambda_align * (NCE(holo) + NCE(part, w = omega(t))) + lambda_jac * L_jac

Presets (config `objective.preset`): `arcdae` (all terms) and `diffae` (lambda_align =
lambda_jac = 0, no TAPA, no teacher, denoiser conditioned on the clean image's code).

Randomness is drawn by `draw_inputs` and passed to `forward`, so two implementations of the
step can be compared on identical timesteps, noise, augmentation parameters and probes.
Choices the SPEC leaves open (documented here, configurable):
- the student's input noise is an independent draw from the denoiser's (`share_noise: false`),
  so the code cannot carry the very noise the denoiser must predict;
- the teacher sees the clean image (strength 0 gives v^T = x0 exactly, so it is not augmented);
- both InfoNCE terms use the teacher's codes as keys (stop-grad).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .diffusion import VPSchedule, training_target
from .ema import ema_update, frozen_copy
from .models.encoder import Codes, SemanticEncoder
from .models.unet import UNet
from .ops import hutchinson_penalty, sample_augment_params, snr_weighted_infonce, timestep_augment
from .ops.hutchinson import fd_estimate, probe_like
from .phases import phase

TERMS = ("loss", "loss_diff", "loss_align", "loss_holo", "loss_part", "loss_jac")


@dataclass
class StepInputs:
    """Everything random in one step (all on the batch's device)."""

    t: torch.Tensor  # (B,) timestep indices
    noise: torch.Tensor  # (B, 3, H, W) denoiser noise
    noise_student: torch.Tensor  # (B, 3, H, W) student input noise
    aug_params: torch.Tensor  # (B, 9) TAPA parameters
    jac_vectors: torch.Tensor | None  # (probes, B, 3, H, W) Hutchinson probes, or None

    def rows(self, lo: int, hi: int) -> StepInputs:
        """The inputs of batch rows lo..hi-1 (a data-parallel rank's share)."""
        vec = None if self.jac_vectors is None else self.jac_vectors[:, lo:hi]
        return StepInputs(
            self.t[lo:hi],
            self.noise[lo:hi],
            self.noise_student[lo:hi],
            self.aug_params[lo:hi],
            vec,
        )

    def to(self, device: torch.device) -> StepInputs:
        return StepInputs(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                for f in fields(self)
            }
        )


def build_encoder(cfg: Config) -> SemanticEncoder:
    m = cfg.model
    return SemanticEncoder(
        resolution=cfg.data.resolution,
        base_channels=m.enc_base_channels,
        channel_mult=m.enc_channel_mult,
        num_res_blocks=m.enc_num_res_blocks,
        attn_resolutions=m.enc_attn_resolutions,
        z_dim=m.z_dim,
        num_parts=m.num_parts,
        part_key_dim=m.part_key_dim,
        part_dim=m.part_dim,
        head_channels=m.head_channels,
        max_groups=m.max_groups,
        op_backend=cfg.objective.backend,
    )


def build_denoiser(cfg: Config) -> UNet:
    m = cfg.model
    return UNet(
        resolution=cfg.data.resolution,
        base_channels=m.base_channels,
        channel_mult=m.channel_mult,
        num_res_blocks=m.num_res_blocks,
        attn_resolutions=m.attn_resolutions,
        dropout=m.dropout,
        z_dim=m.z_dim,
        head_channels=m.head_channels,
        max_groups=m.max_groups,
        adagn_backend=cfg.objective.backend if m.fused_adagn else "reference",
    )


class ArcDAE(nn.Module):
    """Student encoder, EMA teacher (when enabled) and denoiser, with the loss."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        self.teacher = frozen_copy(self.encoder) if cfg.objective.teacher else None
        self.denoiser = build_denoiser(cfg)
        self.schedule = VPSchedule(cfg.diffusion.schedule, cfg.diffusion.T)
        # DDP: gather(rows, with_grad) -> all ranks' rows (arcdae_fast/distributed.py)
        self.gather: Callable[[torch.Tensor, bool], torch.Tensor] | None = None

    def trainable(self) -> nn.ModuleDict:
        """The modules the optimizer updates (and the evaluation EMA tracks)."""
        return nn.ModuleDict({"encoder": self.encoder, "denoiser": self.denoiser})

    def train(self, mode: bool = True) -> ArcDAE:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher is never in training mode
        return self

    @torch.no_grad()
    def update_teacher(self) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, self.encoder, self.cfg.objective.teacher_momentum)

    def draw_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None
    ) -> StepInputs:
        """The step's random inputs for images like x0; `batch` rows instead of x0's (the
        global batch under data parallelism, see StepInputs.rows)."""
        o, dev = self.cfg.objective, x0.device
        b = x0.shape[0] if batch is None else batch
        shape = (b, *x0.shape[1:])
        t = self.schedule.sample_timesteps(b, generator, dev)
        noise = torch.randn(shape, generator=generator, device=dev, dtype=x0.dtype)
        noise_s = (
            noise
            if o.share_noise
            else torch.randn(shape, generator=generator, device=dev, dtype=x0.dtype)
        )
        params = sample_augment_params(self.schedule.gamma(t, o.gamma_max, o.gamma_p), generator)
        vectors = None
        if o.lambda_jac > 0:
            vectors = torch.stack(
                [probe_like(noise, "rademacher", generator) for _ in range(o.jac_probes)]
            )
        return StepInputs(t, noise, noise_s, params, vectors)

    def jac_due(self, step: int) -> bool:
        """Whether step `step` computes the Jacobian term (the lazy schedule: every k steps)."""
        o = self.cfg.objective
        return o.lambda_jac > 0 and step % o.jac_every == 0

    def forward(
        self, x0: torch.Tensor, inp: StepInputs, jac: bool = True
    ) -> dict[str, torch.Tensor]:
        """All loss terms (scalars) for images x0 (B, 3, H, W) in [-1, 1]; `jac`: whether this
        step computes the Jacobian term (see `jac_due`; a bool, so torch.compile sees at most
        two variants instead of one per step number)."""
        o = self.cfg.objective
        alpha, sigma = self.schedule.alpha_sigma(inp.t)
        align = o.lambda_align > 0
        jac = jac and o.lambda_jac > 0
        zero = x0.new_zeros((), dtype=torch.float32)
        out = dict.fromkeys(TERMS, zero)

        z_teacher = None
        if self.teacher is not None and (align or o.cond == "teacher"):
            with torch.no_grad(), phase("teacher"):
                z_teacher = self.teacher(x0, parts=align)  # clean view: aug(x0, 0) = x0
        z_student = x_student = pen = None
        if align or jac or o.cond == "student":
            with phase("augmentation"):
                x_student, _ = timestep_augment(
                    x0, inp.aug_params, alpha, sigma, inp.noise_student, backend=o.backend
                )
            with phase("student encoder"):
                if jac and o.jac_estimator == "fd":
                    z_student, pen = self._student_with_fd_jacobian(x_student, inp, align)
                else:
                    z_student = self.encoder(x_student, parts=align)

        with phase("denoiser fwd"):
            cond = {
                "student": lambda: z_student.holo,
                "teacher": lambda: z_teacher.holo,
                "clean": lambda: self.encoder(x0, parts=False).holo,
            }[o.cond]()
            x_t = self.schedule.q_sample(x0, inp.t, inp.noise)
            pred = self.denoiser(x_t, inp.t, cond)
        with phase("losses"):
            self._losses(out, pred, x0, x_student, z_student, z_teacher, pen, inp, jac)
        return out

    def _losses(self, out, pred, x0, x_student, z_student, z_teacher, pen, inp, jac) -> None:
        o, param = self.cfg.objective, self.cfg.diffusion.parameterization
        alpha, sigma = self.schedule.alpha_sigma(inp.t)
        target = training_target(param, x0, inp.noise, alpha, sigma)
        out["loss_diff"] = F.mse_loss(pred.float(), target.float())
        if o.lambda_align > 0:
            out["loss_holo"] = self._infonce(z_student.holo, z_teacher.holo, None)
            if z_student.part is not None:
                k = z_student.part.shape[1]
                w = self.schedule.omega(inp.t, o.tau_snr).repeat_interleave(k)
                out["loss_part"] = self._infonce(
                    z_student.part.flatten(0, 1), z_teacher.part.flatten(0, 1), w
                )
            out["loss_align"] = out["loss_holo"] + out["loss_part"]
        if jac:
            if pen is None:  # jvp: exact forward mode
                pen = hutchinson_penalty(
                    self.encoder.holo,
                    x_student,
                    estimator="jvp",
                    probes=o.jac_probes,
                    vectors=inp.jac_vectors,
                )
            out["loss_jac"] = (sigma.float() ** 2 * pen).mean() * o.jac_every
        out["loss"] = (
            out["loss_diff"] + o.lambda_align * out["loss_align"] + o.lambda_jac * out["loss_jac"]
        )

    def _infonce(self, query: torch.Tensor, key: torch.Tensor, weight: torch.Tensor | None):
        """SNR-weighted InfoNCE; under DDP with `gather` set, over the global batch: every rank
        gathers all ranks' student codes (with gradient: the gather's backward sums each
        rank's contribution back to the rows' owner) and teacher codes, and computes the same
        global loss, so averaging gradients over ranks gives the single-process gradient."""
        o = self.cfg.objective
        if self.gather is not None:
            query, key = self.gather(query, True), self.gather(key, False)
            weight = None if weight is None else self.gather(weight, False)
        return snr_weighted_infonce(
            query, key, weight, o.tau_nce, symmetric=o.symmetric, backend=o.backend
        )

    def _student_with_fd_jacobian(
        self, x_student: torch.Tensor, inp: StepInputs, parts: bool
    ) -> tuple[Codes, torch.Tensor]:
        """Student codes and the fd Hutchinson estimate from ONE encoder call on the batch
        [x, x + e v_1, ..., x + e v_P] (SPEC section 4; the fast path of the ASR term)."""
        o, b = self.cfg.objective, x_student.shape[0]
        rows = torch.cat(
            [x_student, *(x_student + o.fd_eps * v.to(x_student.dtype) for v in inp.jac_vectors)]
        )
        fp32 = (
            torch.autocast(x_student.device.type, enabled=False)
            if o.jac_fp32
            else (contextlib.nullcontext())
        )
        with fp32:
            tok = self.encoder.tokens(rows)
            codes = self.encoder.heads(tok[:b], parts=parts)
            perturbed = self.encoder.heads(tok[b:], parts=False).holo
        pen = fd_estimate(codes.holo, perturbed.reshape(-1, *codes.holo.shape), o.fd_eps)
        return codes, pen

    @torch.no_grad()
    def encode(self, x0: torch.Tensor) -> torch.Tensor:
        """Inference code: encoder at t = 0 (no noise, no augmentation)."""
        return self.encoder(x0, parts=False).holo
