"""The spatial VAE encoder of DGAE (SPEC section 7): SD-VAE's convolutional encoder
(CompVis latent-diffusion `ldm/modules/diffusionmodules/model.py` `Encoder` with
`double_z`, then AutoencoderKL's 1x1 `quant_conv`), built from the shared ADM blocks.

    x (B, 3, R, R) -> conv_in -> per level: num_res_blocks ResBlocks (+ attention at the
    listed resolutions), a stride-2 conv between levels -> ResBlock, attention, ResBlock ->
    GN, SiLU, conv to 2c -> 1x1 conv -> (mean, logvar), each (B, c, R/f, R/f)

with f = 2^(levels - 1). Block for block the parameter count equals ldm's (bench/
dgae_fidelity.py counts both). Two differences that change no count: the downsampling conv
pads one pixel on every side (ADM's) where ldm pads right and bottom only, and GroupNorm's eps
is 1e-5 (ldm: 1e-6). logvar is clamped to [-30, 20] as ldm's DiagonalGaussianDistribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Arch, Blocks, down_path, group_count

# SD-VAE's blocks: two-conv ResBlocks, conv resampling, one attention head
VAE_ARCH = Arch(resblock_updown=False, encoder_single_conv=False, legacy_attention=True)
LOGVAR_RANGE = (-30.0, 20.0)


class VAEEncoder(nn.Module):
    def __init__(
        self,
        *,
        resolution: int,
        in_channels: int = 3,
        latent_channels: int = 16,
        base_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.0,
        max_groups: int = 32,
    ):
        super().__init__()
        self.downsample = 2 ** (len(channel_mult) - 1)
        if resolution % self.downsample:
            raise ValueError(
                f"resolution {resolution} is not divisible by the encoder's downsampling "
                f"{self.downsample} (channel_mult {channel_mult})"
            )
        blocks = Blocks(VAE_ARCH, dropout=dropout, max_groups=max_groups)
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
        self.out_conv = nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)
        self.moments = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)  # quant_conv
        self.latent_channels = latent_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of the posterior q(z | x), each (B, c, R/f, R/f)."""
        h = x
        for stage in self.down:
            h = stage(h)
        h = self.out_conv(F.silu(self.out_norm(self.middle(h))))
        mean, logvar = self.moments(h).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        side = resolution // self.downsample
        return (self.latent_channels, side, side)
