"""ADM U-Net denoiser conditioned on (t, z) by DiffAE-style AdaGN (SPEC sections 3 and 5).

With `arch=ARCHS["diffae"]` it is DiffAE's BeatGANs autoencoder's U-Net (phizaz/diffae
`model/unet.py` + `unet_autoenc.py`): resampling by BigGAN-style ResBlocks, scale-shift
GroupNorm on the time embedding times (1 + Linear(SiLU(z))), a time embedding of its own width
(512), attention heads as configured (DiffAE: one). Parameter names map one to one onto
DiffAE's (arcdae_fast/convert.py)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    ARCHS,
    Arch,
    Blocks,
    Stage,
    down_path,
    group_count,
    timestep_embedding,
    zero_module,
)


class UNet(nn.Module):
    """eps_hat (or v / x0) = UNet(x_t, i, z): x_t (B, in_channels, R, R), i (B,) timestep
    indices, z (B, z_dim) the code (z_dim=None: conditioned on time only).

    `cond_blocks`: which ResBlocks z modulates, "all" (DiffAE) or "up" (the decoding half
    only: DDAE++'s self-conditioning, whose code is read from the encoding half). The forward
    is `down_pass` then `up_pass`; a caller can read any stage's features on the way
    (`down_pass(tap=...)`, layer names "down.K" and "middle")."""

    def __init__(
        self,
        *,
        resolution: int,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 3, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.1,
        z_dim: int | None = 512,
        embed_channels: int = 512,
        num_heads: int = 1,
        head_channels: int = 0,
        max_groups: int = 32,
        arch: Arch = ARCHS["diffae"],
        in_channels: int = 3,
        out_channels: int = 3,
        cond_blocks: str = "all",
    ):
        super().__init__()
        if cond_blocks not in ("all", "up"):
            raise ValueError(f"cond_blocks must be 'all' or 'up', got {cond_blocks!r}")
        if resolution % 2 ** (len(channel_mult) - 1):
            raise ValueError(
                f"resolution {resolution} is not divisible by "
                f"2**{len(channel_mult) - 1} (channel_mult {channel_mult})"
            )
        self.base = base_channels
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, embed_channels),
            nn.SiLU(),
            nn.Linear(embed_channels, embed_channels),
        )
        blocks = Blocks(arch, embed_channels, z_dim, dropout, num_heads, head_channels, max_groups)
        self.cond_down = cond_blocks == "all"
        first = blocks if self.cond_down else dataclasses.replace(blocks, z_ch=None)
        self.down, chans, ch = down_path(
            first,
            base_channels,
            channel_mult,
            num_res_blocks,
            attn_resolutions,
            resolution,
            in_channels,
        )
        self.middle = first.middle(ch)
        # each tappable stage's output channels ("down.K" are the skips, then the middle)
        self.layer_channels = dict(zip(self.layer_names(), [*chans, ch]))
        self.up = nn.ModuleList()
        res = resolution // 2 ** (len(channel_mult) - 1)
        for level, m in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [blocks.res(ch + chans.pop(), base_channels * m)]
                ch = base_channels * m
                if res in attn_resolutions:
                    layers.append(blocks.attn(ch))
                if level and i == num_res_blocks:
                    layers.append(blocks.up(ch))
                    res *= 2
                self.up.append(Stage(*layers))
        self.out_norm = nn.GroupNorm(group_count(ch, max_groups), ch)
        self.out_conv = zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """The SiLU-activated time embedding of timestep indices t (B,)."""
        return F.silu(self.time_embed(timestep_embedding(t, self.base)))

    def layer_names(self) -> list[str]:
        """The stages `down_pass` can tap, in order: "down.0", ..., "middle"."""
        return [f"down.{i}" for i in range(len(self.down))] + ["middle"]

    def down_pass(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        zc: torch.Tensor | None = None,
        tap: str | None = None,
        stop: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """The encoding half (down stages, middle block): (h, skips, features at `tap`).
        zc: the activated code (ignored with cond_blocks="up"). With `stop` it returns right
        after the tapped stage (h and skips are then partial)."""
        zc = zc if self.cond_down else None
        skips, tapped, h = [], None, x
        for i, stage in enumerate(self.down):
            h = stage(h, emb, zc)
            skips.append(h)
            if tap == f"down.{i}":
                tapped = h
                if stop:
                    return h, skips, tapped
        h = self.middle(h, emb, zc)
        if tap == "middle":
            tapped = h
        elif tap is not None and tapped is None:
            raise ValueError(f"unknown U-Net layer {tap!r}; layers: {self.layer_names()}")
        return h, skips, tapped

    def up_pass(
        self,
        h: torch.Tensor,
        skips: list[torch.Tensor],
        emb: torch.Tensor,
        zc: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoding half from the middle block's output; consumes `skips`."""
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, zc)
        return self.out_conv(F.silu(self.out_norm(h)))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embed(t)
        zc = None if z is None else F.silu(z)
        h, skips, _ = self.down_pass(x, emb, zc)
        return self.up_pass(h, skips, emb, zc)
