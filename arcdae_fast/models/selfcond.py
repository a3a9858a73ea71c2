"""A self-conditioned U-Net (DDAE++, SPEC section 7): no separate encoder. The denoiser's own
features of x_t at one stage of its encoding half (`layer`: "down.K" or "middle") are pooled
(by their mean, or by one learned query through the attention pool op) and projected to a
compact code c; c conditions the decoding half's ResBlocks by AdaGN:

    h, skips, f = down_pass(x_t, t)         # the U-Net's own encoding half, time only
    c = P(pool(f))                          # (B, code_dim)
    pred = up_pass(h, skips, t, c)          # decoding half, AdaGN on (t, c)

The extra compute is the pool and one Linear (models the profiler counts: docs/methods.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.attn_pool import AttentionPool
from .unet import UNet

POOLS = ("mean", "attention")


class CodeHead(nn.Module):
    """Features (B, C, h, w) -> code (B, code_dim): mean over positions, or one learned query
    of the attention pool op (`attention`), then a Linear."""

    def __init__(self, channels: int, code_dim: int, pool: str = "mean", key_dim: int = 64):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.attn = AttentionPool(channels, 1, key_dim) if pool == "attention" else None
        self.proj = nn.Linear(channels, code_dim)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.attn is None:
            pooled = f.mean(dim=(2, 3))
        else:
            pooled = self.attn(f.flatten(2).transpose(1, 2)).squeeze(1)
        return self.proj(pooled)


class SelfCondUNet(nn.Module):
    """pred, code = net(x_t, t). `unet` is built with cond_blocks="up" and z_dim = code_dim;
    `stop_grad`: the denoising loss does not reach the code path through the conditioning
    (then only the alignment trains the head)."""

    # called by the method besides forward: under FSDP they all-gather too (fsdp.shard)
    FSDP_FORWARD_METHODS = ("code", "features", "denoise")

    def __init__(self, unet: UNet, layer: str, code_dim: int, pool: str = "mean", key_dim=64):
        super().__init__()
        if unet.cond_down:
            raise ValueError("SelfCondUNet needs a U-Net with cond_blocks='up'")
        if layer not in unet.layer_names():
            raise ValueError(f"unknown U-Net layer {layer!r}; layers: {unet.layer_names()}")
        self.unet, self.layer = unet, layer
        self.head = CodeHead(unet.layer_channels[layer], code_dim, pool, key_dim)
        self.code_dim = code_dim

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, stop_grad: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.unet.embed(t)
        h, skips, f = self.unet.down_pass(x, emb, tap=self.layer)
        code = self.head(f)
        zc = F.silu(code.detach() if stop_grad else code)
        return self.unet.up_pass(h, skips, emb, zc), code

    def denoise(
        self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The prediction alone, the decoding half conditioned on a given code z (e.g. an
        image's code, edited or not) or, with z None, on x's own code (the sampler's
        denoiser: Denoiser protocol, arcdae_fast/diffusion/samplers.py)."""
        if z is None:
            return self(x, t)[0]
        emb = self.unet.embed(t)
        h, skips, _ = self.unet.down_pass(x, emb)
        return self.unet.up_pass(h, skips, emb, F.silu(z))

    def code(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The code of x_t alone: the encoding half up to the tapped stage, then the head."""
        emb = self.unet.embed(t)
        return self.head(self.unet.down_pass(x, emb, tap=self.layer, stop=True)[2])

    def features(self, x: torch.Tensor, t: torch.Tensor, layer: str) -> torch.Tensor:
        """Mean-pooled features (B, C) of any encoding-half stage (the probe's layer sweep)."""
        emb = self.unet.embed(t)
        return self.unet.down_pass(x, emb, tap=layer, stop=True)[2].mean(dim=(2, 3))
