"""Semantic encoder (SPEC section 3): the downsampling half of an ADM U-Net (DiffAE's encoder)
with a holistic head z_holo = P_holo(mean_u h(u)) and a part head of K attention-pooled
codes z_part,k = P_part(sum_u rho_k(u) h(u))."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.attn_pool import PartHead
from .layers import ARCHS, Arch, Blocks, down_path, group_count


class Codes(NamedTuple):
    holo: torch.Tensor  # (B, z_dim)
    part: torch.Tensor | None  # (B, K, part_dim), None when not requested


class SemanticEncoder(nn.Module):
    """x (B, 3, R, R) -> Codes. With `arch=ARCHS["diffae"]` it is DiffAE's encoder
    (BeatGANsEncoderModel without time conditioning, pool "adaptivenonzero"): single-conv
    ResBlocks, resampling ResBlocks between levels, no dropout (its unconditioned blocks have
    none), z = Conv1x1(mean_u SiLU(GN(h))) (here a Linear on the mean of the tokens)."""

    def __init__(
        self,
        *,
        resolution: int,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 3, 4, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        z_dim: int = 512,
        num_parts: int = 0,
        part_key_dim: int = 64,
        part_dim: int = 128,
        num_heads: int = 1,
        head_channels: int = 0,
        max_groups: int = 32,
        arch: Arch = ARCHS["diffae"],
    ):
        super().__init__()
        if resolution % 2 ** (len(channel_mult) - 1):
            raise ValueError(
                f"resolution {resolution} is not divisible by "
                f"2**{len(channel_mult) - 1} (encoder channel_mult {channel_mult})"
            )
        blocks = Blocks(
            arch, num_heads=num_heads, head_channels=head_channels, max_groups=max_groups
        )
        self.down, _, ch = down_path(
            blocks,
            base_channels,
            channel_mult,
            num_res_blocks,
            attn_resolutions,
            resolution,
            in_channels,
        )
        self.middle = blocks.middle(ch)
        self.out_norm = nn.GroupNorm(group_count(ch, max_groups), ch)
        self.channels, self.z_dim = ch, z_dim
        self.holo_head = nn.Linear(ch, z_dim)
        # ArcDAE's addition (SPEC section 3); num_parts = 0: DiffAE's encoder, no part head
        self.part_head = PartHead(ch, num_parts, part_key_dim, part_dim) if num_parts > 0 else None

    # called by the methods besides forward: under FSDP they all-gather too (fsdp.shard)
    FSDP_FORWARD_METHODS = ("tokens", "heads", "holo")

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map h as tokens (B, h*w, C_e)."""
        h = x
        for stage in self.down:
            h = stage(h)
        h = F.silu(self.out_norm(self.middle(h)))
        return h.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, parts: bool = True) -> Codes:
        return self.heads(self.tokens(x), parts)

    def heads(self, tok: torch.Tensor, parts: bool = True) -> Codes:
        """Codes from tokens (B, N, C_e): holistic (mean-pooled) and, if asked, part codes."""
        holo = self.holo_head(tok.mean(dim=1))
        part = self.part_head(tok) if (parts and self.part_head is not None) else None
        return Codes(holo, part)

    def holo(self, x: torch.Tensor) -> torch.Tensor:
        """z_holo only (the function whose Jacobian the ASR term penalizes)."""
        return self.forward(x, parts=False).holo
