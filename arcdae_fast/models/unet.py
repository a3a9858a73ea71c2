"""ADM U-Net denoiser conditioned on (t, z) by DiffAE-style AdaGN (SPEC sections 3 and 5).

With `arch=ARCHS["diffae"]` it is DiffAE's BeatGANs autoencoder's U-Net (phizaz/diffae
`model/unet.py` + `unet_autoenc.py`): resampling by BigGAN-style ResBlocks, scale-shift
GroupNorm on the time embedding times (1 + Linear(SiLU(z))), a time embedding of its own width
(512), attention heads as configured (DiffAE: one). Parameter names map one to one onto
DiffAE's (arcdae_fast/convert.py)."""

from __future__ import annotations

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
    indices, z (B, z_dim) the code (z_dim=None: conditioned on time only)."""

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
    ):
        super().__init__()
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
        self.down, chans, ch = down_path(
            blocks,
            base_channels,
            channel_mult,
            num_res_blocks,
            attn_resolutions,
            resolution,
            in_channels,
        )
        self.middle = blocks.middle(ch)
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

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = F.silu(self.time_embed(timestep_embedding(t, self.base)))
        zc = None if z is None else F.silu(z)
        skips = []
        h = x
        for stage in self.down:
            h = stage(h, emb, zc)
            skips.append(h)
        h = self.middle(h, emb, zc)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, zc)
        return self.out_conv(F.silu(self.out_norm(h)))
