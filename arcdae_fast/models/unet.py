"""ADM U-Net denoiser conditioned on (t, z) by DiffAE-style AdaGN (SPEC sections 3 and 5).

Resampling is a stride-2 conv (down) and nearest x2 + conv (up); ADM's optional BigGAN-style
resampling ResBlocks are not used."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    AttentionBlock,
    ResBlock,
    Stage,
    Upsample,
    down_path,
    group_count,
    timestep_embedding,
    zero_module,
)


class UNet(nn.Module):
    """eps_hat (or v / x0) = UNet(x_t, i, z): x_t (B, 3, R, R), i (B,) timestep indices,
    z (B, z_dim) semantic code."""

    def __init__(
        self,
        *,
        resolution: int,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 3, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.1,
        z_dim: int = 512,
        head_channels: int = 64,
        max_groups: int = 32,
    ):
        super().__init__()
        if resolution % 2 ** (len(channel_mult) - 1):
            raise ValueError(
                f"resolution {resolution} is not divisible by "
                f"2**{len(channel_mult) - 1} (channel_mult {channel_mult})"
            )
        self.base = base_channels
        emb_ch = 4 * base_channels
        self.time_embed = nn.Sequential(
            nn.Linear(base_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch)
        )
        rb = dict(emb_ch=emb_ch, z_ch=z_dim, dropout=dropout, max_groups=max_groups)
        self.down, chans, ch = down_path(
            base_channels,
            channel_mult,
            num_res_blocks,
            attn_resolutions,
            resolution,
            head_channels=head_channels,
            **rb,
        )
        self.middle = Stage(
            ResBlock(ch, ch, **rb),
            AttentionBlock(ch, head_channels, max_groups),
            ResBlock(ch, ch, **rb),
        )
        self.up = nn.ModuleList()
        res = resolution // 2 ** (len(channel_mult) - 1)
        for level, m in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks: list[nn.Module] = [ResBlock(ch + chans.pop(), base_channels * m, **rb)]
                ch = base_channels * m
                if res in attn_resolutions:
                    blocks.append(AttentionBlock(ch, head_channels, max_groups))
                if level and i == num_res_blocks:
                    blocks.append(Upsample(ch))
                    res *= 2
                self.up.append(Stage(*blocks))
        self.out_norm = nn.GroupNorm(group_count(ch, max_groups), ch)
        self.out_conv = zero_module(nn.Conv2d(ch, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.time_embed(timestep_embedding(t, self.base)))
        zc = F.silu(z)
        skips = []
        h = x
        for stage in self.down:
            h = stage(h, emb, zc)
            skips.append(h)
        h = self.middle(h, emb, zc)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, zc)
        return self.out_conv(F.silu(self.out_norm(h)))
