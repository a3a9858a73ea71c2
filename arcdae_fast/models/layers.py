"""ADM building blocks shared by the denoiser and the semantic encoder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.attention import attention
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


@dataclass(frozen=True)
class Arch:
    """The block choices that tell DiffAE's network from our earlier, lighter one
    (`model.arch`); the sizes are the config's."""

    resblock_updown: bool  # resample in BigGAN-style ResBlocks (avg pool / nearest, no conv)
    encoder_single_conv: bool  # unconditioned ResBlocks: GN, SiLU, conv + skip (no 2nd conv)
    legacy_attention: bool  # qkv channels grouped per head (ADM's QKVAttentionLegacy)


ARCHS = {
    # DiffAE's BeatGANs autoencoder (phizaz/diffae model/unet.py, unet_autoenc.py, blocks.py)
    "diffae": Arch(resblock_updown=True, encoder_single_conv=True, legacy_attention=True),
    # the engine's first network: stride-2 conv down, nearest x2 + conv up, two-conv
    # ResBlocks in the encoder too, q/k/v split before the heads
    "adm_conv": Arch(resblock_updown=False, encoder_single_conv=False, legacy_attention=False),
}


def attention_heads(channels: int, num_heads: int, head_channels: int) -> int:
    """head_channels > 0: channels // head_channels heads (at least 1); else num_heads."""
    heads = max(1, channels // head_channels) if head_channels > 0 else num_heads
    if channels % heads:
        raise ValueError(f"attention channels {channels} not divisible into {heads} heads")
    return heads


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling by an integer factor (F.interpolate's, exactly). Under
    torch.compile it is written as an expand + reshape: Inductor's CPU code for
    F.interpolate(mode="nearest") after a stride-2 convolution in bf16 gave all-zero gradients
    to everything before it (torch 2.13: DGAE's compiled bf16 step trained only the U-Net's
    top level; bench/repro_upsample_bf16.py reproduces it). Eager, and fp32 under compile,
    keep the ATen kernel."""
    if not torch.compiler.is_compiling() or x.dtype not in (torch.bfloat16, torch.float16):
        return F.interpolate(x, scale_factor=float(factor), mode="nearest")
    b, c, h, w = x.shape
    f = factor
    return x[:, :, :, None, :, None].expand(b, c, h, f, w, f).reshape(b, c, f * h, f * w)


def resample(x: torch.Tensor, kind: str | None) -> torch.Tensor:
    """BigGAN-style resampling inside a ResBlock: "down" 2x2 average pool, "up" nearest x2."""
    if kind == "down":
        return F.avg_pool2d(x, 2)
    if kind == "up":
        return upsample(x)
    return x


class ResBlock(nn.Module):
    """ADM residual block. With emb/z it conditions its second norm by AdaGN (DiffAE):
    SiLU((GN(h) * (1 + s_t) + b_t) * (1 + Linear(SiLU(z)))); without, plain GN + SiLU.
    `resample` ("up" / "down"): BigGAN-style, the activated input and the skip path are
    resampled before the first conv. `single_conv` (unconditioned only): DiffAE's encoder
    block, h = conv(SiLU(GN(x))) + skip(x), without the second norm and conv."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        emb_ch: int | None = None,
        z_ch: int | None = None,
        dropout: float = 0.0,
        max_groups: int = 32,
        resample: str | None = None,
        single_conv: bool = False,
    ):
        super().__init__()
        if single_conv and emb_ch:
            raise ValueError("single_conv is DiffAE's unconditioned block: no emb_ch")
        self.resample, self.single_conv = resample, single_conv
        self.in_norm = nn.GroupNorm(group_count(in_ch, max_groups), in_ch)
        self.in_conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_ch, 2 * out_ch) if emb_ch else None
        self.zproj = nn.Linear(z_ch, out_ch) if (emb_ch and z_ch) else None
        if not single_conv:
            self.out_norm = nn.GroupNorm(group_count(out_ch, max_groups), out_ch)
            self.dropout = nn.Dropout(dropout)
            self.out_conv = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """emb, z: the already SiLU-activated timestep embedding and code (or None)."""
        h = resample(F.silu(self.in_norm(x)), self.resample)
        x = resample(x, self.resample)
        h = self.in_conv(h)
        if self.single_conv:
            return self.skip(x) + h
        if self.emb is not None:
            scale, shift = self.emb(emb).to(h.dtype).chunk(2, dim=1)
            zscale = self.zproj(z).to(h.dtype) if self.zproj is not None else None
            n = self.out_norm
            h = adagn(h, n.weight, n.bias, scale, shift, zscale, groups=n.num_groups, eps=n.eps)
        else:
            h = F.silu(self.out_norm(h))
        return self.skip(x) + self.out_conv(self.dropout(h))


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, via nn/attention.py's backend
    (model.attn_backend; SDPA by default; scale 1/sqrt(d), as ADM's q and k each scaled by
    d^-1/4). `legacy_order`: the 3C qkv channels hold [q, k, v] per head (ADM's
    QKVAttentionLegacy, DiffAE's); else all heads' q, then k, then v (QKVAttention). With
    one head the two are the same."""

    def __init__(self, ch: int, heads: int = 1, max_groups: int = 32, legacy_order: bool = True):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention channels {ch} not divisible into {heads} heads")
        self.heads, self.legacy_order = heads, legacy_order
        self.norm = nn.GroupNorm(group_count(ch, max_groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_module(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x))
        if self.legacy_order:
            qkv = qkv.reshape(b, self.heads, 3, c // self.heads, hh * ww).transpose(1, 2)
        else:
            qkv = qkv.reshape(b, 3, self.heads, c // self.heads, hh * ww)
        q, k, v = (t.transpose(-1, -2) for t in qkv.unbind(1))  # (B, heads, HW, d)
        out = attention(q, k, v)
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
        return self.conv(upsample(x))


class Stage(nn.Sequential):
    """A sequence of blocks; ResBlocks receive (emb, z), others ignore them."""

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        for m in self:
            x = m(x, emb, z) if isinstance(m, ResBlock) else m(x)
        return x


@dataclass(frozen=True)
class Blocks:
    """How to make the blocks of one network: its arch, conditioning and attention heads."""

    arch: Arch
    emb_ch: int | None = None
    z_ch: int | None = None
    dropout: float = 0.0
    num_heads: int = 1
    head_channels: int = 0
    max_groups: int = 32

    def res(self, in_ch: int, out_ch: int, resample: str | None = None) -> ResBlock:
        return ResBlock(
            in_ch,
            out_ch,
            emb_ch=self.emb_ch,
            z_ch=self.z_ch,
            dropout=self.dropout,
            max_groups=self.max_groups,
            resample=resample,
            single_conv=self.emb_ch is None and self.arch.encoder_single_conv,
        )

    def attn(self, ch: int) -> AttentionBlock:
        heads = attention_heads(ch, self.num_heads, self.head_channels)
        return AttentionBlock(ch, heads, self.max_groups, self.arch.legacy_attention)

    def down(self, ch: int) -> nn.Module:
        return self.res(ch, ch, "down") if self.arch.resblock_updown else Downsample(ch)

    def up(self, ch: int) -> nn.Module:
        return self.res(ch, ch, "up") if self.arch.resblock_updown else Upsample(ch)

    def middle(self, ch: int) -> Stage:
        return Stage(self.res(ch, ch), self.attn(ch), self.res(ch, ch))


def down_path(
    blocks: Blocks,
    base: int,
    mult: tuple[int, ...],
    num_res: int,
    attn_res: tuple[int, ...],
    resolution: int,
    in_channels: int = 3,
) -> tuple[nn.ModuleList, list[int], int]:
    """ADM's input blocks: conv_in, then per level `num_res` ResBlocks (+ attention at the
    listed resolutions) and a downsampling block between levels. Returns the stages, the
    channel count of every skip connection and the final channel count."""
    ch = base * mult[0]
    stages = nn.ModuleList([Stage(nn.Conv2d(in_channels, ch, 3, padding=1))])
    chans, res = [ch], resolution
    for level, m in enumerate(mult):
        for _ in range(num_res):
            layers: list[nn.Module] = [blocks.res(ch, base * m)]
            ch = base * m
            if res in attn_res:
                layers.append(blocks.attn(ch))
            stages.append(Stage(*layers))
            chans.append(ch)
        if level != len(mult) - 1:
            stages.append(Stage(blocks.down(ch)))
            chans.append(ch)
            res //= 2
    return stages, chans, ch
