"""ArcDAE (SPEC sections 2-4): DiffAE plus an asymmetric EMA teacher (ASR), timestep-aware
progressive augmentation of the student's view (TAPA), InfoNCE alignment of holistic and
attention-pooled part codes with the SNR gate on the part term (TGA), and an optional explicit
Hutchinson Jacobian penalty:

    L = L_diff + lambda_align * (NCE(holo) + NCE(part, w = omega(t))) + lambda_jac * L_jac

Choices the SPEC leaves open (configurable):
- the student's input noise is an independent draw from the denoiser's (`share_noise: false`),
  so the code cannot carry the very noise the denoiser must predict;
- the teacher sees the clean image (strength 0 gives v^T = x0 exactly, so it is not augmented);
- both InfoNCE terms use the teacher's codes as keys (stop-grad).
With lambda_align = lambda_jac = gamma_max = 0, no teacher and cond=clean it is DiffAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config.schema import Config, ConfigError, MethodConfig, option
from ..ema import ema_update, frozen_copy
from ..losses import InfoNCE, jacobian_term
from ..models import Codes, SemanticEncoder, build_encoder
from ..ops import sample_augment_params, timestep_augment
from ..ops.hutchinson import probe_like
from ..phases import phase
from .base import RandomInputs, batch_dim
from .diffae import DiffAE
from .registry import register

JVP_BLOCKER = (
    "method.jac_estimator=jvp does not compile (forward-mode AD through GroupNorm); "
    "the compiled step needs method.jac_estimator=fd"
)


@dataclass
class ArcDAEConfig(MethodConfig):
    name: str = option("arcdae", doc="the training method")
    lambda_align: float = option(1.0, min=0.0)
    lambda_jac: float = option(0.1, min=0.0)
    tau_nce: float = option(0.1, min=1e-6)
    tau_snr: float = option(1.0, min=1e-6)
    gamma_max: float = option(1.0, min=0.0)
    gamma_p: float = option(1.0, min=1e-6)
    teacher: bool = option(True, doc="keep an EMA teacher encoder")
    teacher_momentum: float = option(0.999, min=0.0)
    cond: str = option(
        "student",
        choices=("student", "teacher", "clean"),
        doc="code the denoiser is conditioned on",
    )
    share_noise: bool = option(False, doc="student input uses the denoiser's noise draw")
    symmetric: bool = option(False, doc="symmetric InfoNCE")
    jac_estimator: str = option("fd", choices=("fd", "jvp"))
    jac_probes: int = option(1, min=1)
    jac_every: int = option(1, min=1, doc="lazy Jacobian term: every k steps, scaled by k")
    fd_eps: float = option(1e-3, min=1e-12)
    jac_fp32: bool = option(
        True,
        doc="run the fd Jacobian's encoder calls in float32 under autocast "
        "(1e-3 is below bf16 resolution)",
    )
    gather_negatives: bool = option(
        True,
        doc="multi-process (torchrun): InfoNCE over the global batch, negatives gathered from "
        "every rank; false: each rank's own batch",
    )
    num_parts: int = option(8, min=0, doc="K part codes (attention-pooled); 0: no part term")
    part_key_dim: int = option(64, min=1, doc="d_k of the part queries")
    part_dim: int = option(128, min=1, doc="d_p of a part code")

    def check(self, cfg: Config) -> None:
        if not self.teacher_momentum <= 1:
            raise ConfigError("config: method.teacher_momentum must be in [0, 1]")
        if self.cond == "teacher" and not self.teacher:
            raise ConfigError("config: method.cond='teacher' needs method.teacher=true")
        if self.lambda_align > 0 and not self.teacher:
            raise ConfigError(
                "config: method.lambda_align > 0 needs method.teacher=true "
                "(the alignment target is the teacher's code)"
            )
        if cfg.train.step == "compiled" and self.lambda_jac > 0 and self.jac_estimator != "fd":
            raise ConfigError(
                "config: train.step=compiled needs method.jac_estimator=fd (forward-mode AD "
                "through GroupNorm does not compile); use train.step=eager or auto for jvp"
            )


@dataclass
class ArcDAEInputs(RandomInputs):
    t: torch.Tensor  # (B,) timestep indices
    noise: torch.Tensor  # (B, 3, H, W) denoiser noise
    noise_student: torch.Tensor  # (B, 3, H, W) student input noise
    aug_params: torch.Tensor  # (B, 9) TAPA parameters
    jac_vectors: torch.Tensor | None = batch_dim(1)  # (probes, B, 3, H, W), or None


@register
class ArcDAE(DiffAE):
    name = "arcdae"
    Config = ArcDAEConfig
    Inputs = ArcDAEInputs
    PHASES = ("augmentation", "teacher", "student encoder", "denoiser fwd", "losses")

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        o = self.mcfg
        self.teacher = frozen_copy(self.encoder) if o.teacher else None
        self.nce = InfoNCE(o.tau_nce, o.symmetric)

    def make_encoder(self) -> SemanticEncoder:
        o = self.mcfg
        parts = (o.num_parts, o.part_key_dim, o.part_dim) if o.num_parts else None
        d = self.cfg.data
        return build_encoder(self.cfg.model, d.resolution, parts, d.channels)

    def terms(self) -> tuple[str, ...]:
        o = self.mcfg
        out = ["loss", "loss_diff"]
        if o.lambda_align > 0:
            out += ["loss_align", "loss_holo"] + (["loss_part"] if o.num_parts else [])
        if o.lambda_jac > 0:
            out.append("loss_jac")
        return tuple(out)

    def targets(self) -> dict[str, nn.Module]:
        return {} if self.teacher is None else {"teacher": self.teacher}

    @torch.no_grad()
    def update_targets(self) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, self.encoder, self.mcfg.teacher_momentum)

    def distribute(self, gather) -> None:
        self.gather = gather if self.mcfg.gather_negatives else None

    def compile_blocker(self) -> str | None:
        o = self.mcfg
        return JVP_BLOCKER if o.lambda_jac > 0 and o.jac_estimator != "fd" else None

    def flags(self, step: int) -> dict[str, bool]:
        """jac: whether this step computes the Jacobian term (the lazy schedule)."""
        o = self.mcfg
        return {"jac": o.lambda_jac > 0 and step % o.jac_every == 0}

    def flag_period(self) -> int:
        return self.mcfg.jac_every

    def draw_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None
    ) -> ArcDAEInputs:
        o = self.mcfg
        base = super().draw_inputs(x0, generator, batch)
        noise = base.noise
        noise_s = (
            noise
            if o.share_noise
            else torch.randn(noise.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        )
        strength = self.schedule.gamma(base.t, o.gamma_max, o.gamma_p)
        params = sample_augment_params(strength, generator)
        vectors = None
        if o.lambda_jac > 0:
            vectors = torch.stack(
                [probe_like(noise, "rademacher", generator) for _ in range(o.jac_probes)]
            )
        return ArcDAEInputs(base.t, noise, noise_s, params, vectors)

    def forward(
        self, x0: torch.Tensor, inputs: ArcDAEInputs, jac: bool = True
    ) -> dict[str, torch.Tensor]:
        o, inp = self.mcfg, inputs
        alpha, sigma = self.schedule.alpha_sigma(inp.t)
        align = o.lambda_align > 0
        jac = jac and o.lambda_jac > 0
        zero = x0.new_zeros((), dtype=torch.float32)
        out = dict.fromkeys(self.terms(), zero)

        z_teacher = None
        if self.teacher is not None and (align or o.cond == "teacher"):
            with torch.no_grad(), phase("teacher"):
                z_teacher = self.teacher(x0, parts=align)  # clean view: aug(x0, 0) = x0
        z_student = x_student = None
        if align or jac or o.cond == "student":
            with phase("augmentation"):
                x_student, _ = timestep_augment(x0, inp.aug_params, alpha, sigma, inp.noise_student)
            with phase("student encoder"):
                if jac and o.jac_estimator == "fd":
                    z_student, out["loss_jac"] = self._student_with_fd_jacobian(
                        x_student, sigma, inp.jac_vectors, align
                    )
                else:
                    z_student = self.encoder(x_student, parts=align)
                    if jac:  # jvp: exact forward mode (the eager step only)
                        out["loss_jac"] = o.jac_every * jacobian_term(
                            self.encoder.holo, x_student, sigma, inp.jac_vectors, estimator="jvp"
                        )
        cond = {
            "student": lambda: z_student.holo,
            "teacher": lambda: z_teacher.holo,
            "clean": lambda: self.encoder(x0, parts=False).holo,
        }[o.cond]()
        out["loss_diff"] = self.denoise(x0, inp, cond)
        with phase("losses"):
            if align:
                self._align(out, z_student, z_teacher, inp.t)
            out["loss"] = (
                out["loss_diff"]
                + o.lambda_align * out.get("loss_align", zero)
                + o.lambda_jac * out.get("loss_jac", zero)
            )
        return out

    def _student_with_fd_jacobian(
        self, x: torch.Tensor, sigma: torch.Tensor, vectors: torch.Tensor, parts: bool
    ) -> tuple[Codes, torch.Tensor]:
        """The student's codes and jac_every * L_jac (fd) from ONE encoder call:
        `hutchinson_penalty` evaluates the holistic code on the batch [x, x + e v_1, ...,
        x + e v_P] (fx not given); the encoder trunk's tokens of the first B rows (x itself)
        also give the student's part codes. With jac_fp32 the whole call runs in float32
        (the fd difference needs the unperturbed code in float32 too)."""
        o, b, kept = self.mcfg, x.shape[0], {}

        def holo(rows: torch.Tensor) -> torch.Tensor:
            tok = self.encoder.tokens(rows)
            kept["codes"] = self.encoder.heads(tok[:b], parts=parts)
            return torch.cat([kept["codes"].holo, self.encoder.heads(tok[b:], parts=False).holo])

        loss = jacobian_term(
            holo, x, sigma, vectors, estimator="fd", fd_eps=o.fd_eps, fp32=o.jac_fp32
        )
        return kept["codes"], o.jac_every * loss

    def _align(self, out: dict, student: Codes, teacher: Codes, t: torch.Tensor) -> None:
        out["loss_holo"] = self.nce(student.holo, teacher.holo, None, self.gather)
        out["loss_align"] = out["loss_holo"]
        if student.part is not None:
            k = student.part.shape[1]
            w = self.schedule.omega(t, self.mcfg.tau_snr).repeat_interleave(k)
            out["loss_part"] = self.nce(
                student.part.flatten(0, 1), teacher.part.flatten(0, 1), w, self.gather
            )
            out["loss_align"] = out["loss_holo"] + out["loss_part"]
