"""Exponential moving averages: the ArcDAE teacher (momentum m) and the evaluation weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy that never receives gradients."""
    out = copy.deepcopy(module)
    out.requires_grad_(False)
    return out


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, as one foreach lerp over parameters;
    floating-point buffers are lerped too, others copied."""
    tp, sp = list(target.parameters()), list(source.parameters())
    if len(tp) != len(sp):
        raise ValueError("EMA target and source have different parameter lists")
    if tp:
        torch._foreach_lerp_(tp, sp, 1.0 - decay)
    for tb, sb in zip(target.buffers(), source.buffers()):
        if tb.is_floating_point():
            tb.lerp_(sb, 1.0 - decay)
        else:
            tb.copy_(sb)


def warmup_decay(decay: float, step: int) -> float:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)): early averages do not
    mix the fast-changing first weights with the random initialisation."""
    return min(decay, (1.0 + step) / (10.0 + step))
