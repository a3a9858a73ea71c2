"""ADM building blocks shared by the denoiser and the semantic encoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.adagn import adagn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim), [cos | sin] as in ADM."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= max_groups that divides `channels`."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """ADM residual block. With emb/z it conditions its second norm by AdaGN (DiffAE):
    SiLU((GN(h) * (1 + s_t) + b_t) * (1 + Linear(SiLU(z)))); without, plain GN + SiLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        emb_ch: int | None = None,
        z_ch: int | None = None,
        dropout: float = 0.0,
        max_groups: int = 32,
    ):
        super().__init__()
        self.in_norm = nn.GroupNorm(group_count(in_ch, max_groups), in_ch)
        self.in_conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_ch, 2 * out_ch) if emb_ch else None
        self.zproj = nn.Linear(z_ch, out_ch) if (emb_ch and z_ch) else None
        self.out_norm = nn.GroupNorm(group_count(out_ch, max_groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """emb, z: the already SiLU-activated timestep embedding and code (or None)."""
        h = self.in_conv(F.silu(self.in_norm(x)))
        if self.emb is not None:
            scale, shift = self.emb(emb).to(h.dtype).chunk(2, dim=1)
            zscale = self.zproj(z).to(h.dtype) if self.zproj is not None else None
            n = self.out_norm
            h = adagn(
                h,
                n.weight,
                n.bias,
                scale,
                shift,
                zscale,
                groups=n.num_groups,
                eps=n.eps,
            )
        else:
            h = F.silu(self.out_norm(h))
        return self.skip(x) + self.out_conv(self.dropout(h))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, via scaled_dot_product_attention."""

    def __init__(self, ch: int, head_channels: int = 64, max_groups: int = 32):
        super().__init__()
        self.heads = max(1, ch // head_channels)
        if ch % self.heads:
            raise ValueError(f"attention channels {ch} not divisible into {self.heads} heads")
        self.norm = nn.GroupNorm(group_count(ch, max_groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_module(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hh * ww)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (B, heads, HW, d)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Sequential):
    """A sequence of blocks; ResBlocks receive (emb, z), others ignore them."""

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        for m in self:
            x = m(x, emb, z) if isinstance(m, ResBlock) else m(x)
        return x


def down_path(
    base: int,
    mult: tuple[int, ...],
    num_res: int,
    attn_res: tuple[int, ...],
    resolution: int,
    *,
    emb_ch: int | None,
    z_ch: int | None,
    dropout: float,
    head_channels: int,
    max_groups: int,
) -> tuple[nn.ModuleList, list[int], int]:
    """ADM's input blocks: conv_in, then per level `num_res` ResBlocks (+ attention at the
    listed resolutions) and a Downsample between levels. Returns the stages, the channel
    count of every skip connection and the final channel count."""
    rb = dict(emb_ch=emb_ch, z_ch=z_ch, dropout=dropout, max_groups=max_groups)
    stages = nn.ModuleList([Stage(nn.Conv2d(3, base, 3, padding=1))])
    chans, ch, res = [base], base, resolution
    for level, m in enumerate(mult):
        for _ in range(num_res):
            blocks: list[nn.Module] = [ResBlock(ch, base * m, **rb)]
            ch = base * m
            if res in attn_res:
                blocks.append(AttentionBlock(ch, head_channels, max_groups))
            stages.append(Stage(*blocks))
            chans.append(ch)
        if level != len(mult) - 1:
            stages.append(Stage(Downsample(ch)))
            chans.append(ch)
            res //= 2
    return stages, chans, ch
