"""Sharded data parallelism on FSDP2 (`train.parallel: fsdp` under torchrun).

`shard` applies `torch.distributed.fsdp.fully_shard` to every stage of each U-Net (its down
and up stages and its middle block), then to each trained network as a whole (the encoders
are one unit each, and the root catches the rest: time embedding, heads, output layers),
and to each target network (ArcDAE's EMA teacher: frozen, all-gathered for its forward, never
reduced). Every parameter is then a DTensor holding this rank's dim-0 shard; AdamW's moments
follow, so parameters, gradients and optimizer state are 1 / N per rank. The gradients are
reduce-scattered (averaged) in float32 during backward.

Mixed precision (the step's bf16 autocast): the U-Net stages all-gather their parameters in
bf16 (MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)); the encoders keep float32
parameters under autocast, since ArcDAE's finite-difference Jacobian runs the encoder with
autocast off and needs float32 weights.

The evaluation EMA is a copy of the trained networks whose parameters are DTensors with the
same shards and no FSDP hooks: its update is a local lerp, and `gather` makes a full copy
when rank 0 needs one (sample grids, evaluation during training).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .models.unet import UNet


def _fsdp():
    # torch >= 2.6 exports FSDP2 here; 2.4-2.5 under _composable
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # pragma: no cover - older torch
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    return fully_shard, MixedPrecisionPolicy


def _unet_stages(net: nn.Module) -> Iterator[nn.Module]:
    for m in net.modules():
        if isinstance(m, UNet):
            yield from m.down
            yield m.middle
            yield from m.up


def shard(nets: list[nn.Module], bf16: bool) -> None:
    """fully_shard the networks in place (see the module docstring). A network's methods
    other than forward that the method calls (its class's FSDP_FORWARD_METHODS, e.g. the
    semantic encoder's tokens / heads / holo) get FSDP's hooks too, so they all-gather."""
    import warnings

    from torch.distributed.fsdp import register_fsdp_forward_method

    # the semantic encoder's tokens are a transposed view; no caller modifies them in place
    warnings.filterwarnings(
        "ignore", r"FSDP2-wrapped module \(FSDPSemanticEncoder\) returned a view"
    )

    fully_shard, Policy = _fsdp()
    low = Policy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    full = Policy(reduce_dtype=torch.float32)
    for net in nets:
        for stage in _unet_stages(net):
            fully_shard(stage, mp_policy=low)
        fully_shard(net, mp_policy=full)
        for name in getattr(net, "FSDP_FORWARD_METHODS", ()):
            register_fsdp_forward_method(net, name)


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def shard_like(copy: nn.Module, sharded: nn.Module) -> nn.Module:
    """`copy` (a plain module, e.g. the evaluation EMA made before sharding) with each
    parameter replaced by a frozen clone of the matching sharded parameter: the same
    DTensor shards, no FSDP hooks."""
    ours, theirs = list(copy.named_parameters()), list(sharded.named_parameters())
    if [n for n, _ in ours] != [n for n, _ in theirs]:
        raise ValueError("shard_like: the two modules have different parameters")
    for (name, _), (_, p) in zip(ours, theirs):
        owner, _, leaf = name.rpartition(".")
        m = copy.get_submodule(owner)
        setattr(m, leaf, nn.Parameter(p.detach().clone(), requires_grad=False))
    return copy


def gather(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's full state dict (DTensors all-gathered: every rank must call it)."""
    return {k: local(v) for k, v in module.state_dict().items()}


def set_gradient_sync(nets: list[nn.Module], sync: bool) -> None:
    """Gradient accumulation: off on all but the last micro-batch (FSDP2's no_sync)."""
    for net in nets:
        net.set_requires_gradient_sync(sync)


def local(x: torch.Tensor) -> torch.Tensor:
    """A DTensor (e.g. clip_grad_norm_'s total norm) as a plain full tensor (a collective);
    any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x
