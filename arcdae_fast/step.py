"""One training step. `ReferenceStep` is the eager ground truth: forward of teacher, student
and denoiser, all loss terms, backward, clipping, AdamW, then the teacher and evaluation EMAs.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .ema import ema_update, warmup_decay
from .objective import ArcDAE, StepInputs


class NonFiniteLoss(FloatingPointError):
    """The loss is NaN or inf; raised before any parameter is touched."""


def build_optimizer(
    model: ArcDAE, lr: float, betas: tuple[float, ...], weight_decay: float, warmup_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a linear warm-up to `lr`, then constant (DiffAE's schedule)."""
    params = [p for p in model.trainable().parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0
    )
    return opt, sched


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA for precision auto/bf16; on CPU only when bf16 is asked for."""
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class ReferenceStep:
    def __init__(
        self,
        model: ArcDAE,
        ema: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        grad_clip: float,
        ema_decay: float,
        precision: str = "fp32",
    ):
        self.model, self.ema, self.opt, self.sched = model, ema, optimizer, scheduler
        self.grad_clip, self.ema_decay, self.precision = grad_clip, ema_decay, precision
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def __call__(self, x0: torch.Tensor, inputs: StepInputs, step: int) -> dict[str, torch.Tensor]:
        self.model.train()
        with autocast_for(x0.device, self.precision):
            out = self.model(x0, inputs, step)
        if not torch.isfinite(out["loss"]):
            terms = ", ".join(f"{k}={v.item():.4g}" for k, v in out.items())
            raise NonFiniteLoss(f"non-finite loss at step {step} ({terms})")
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if self.grad_clip > 0:
            out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        self.sched.step()
        self.model.update_teacher()
        ema_update(self.ema, self.model.trainable(), warmup_decay(self.ema_decay, step))
        return {k: v.detach() for k, v in out.items()}
