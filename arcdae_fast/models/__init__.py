"""Building blocks the methods compose: the ADM U-Net denoiser (`unet.py`), the semantic
vector encoder with its holistic and optional part heads (`encoder.py`), DGAE's spatial VAE
encoder (`vae.py`), and the shared layers (`layers.py`). Conditioning: the U-Net's ResBlocks
modulate by AdaGN on the time embedding and, when `cond_dim` is set, on a vector code z
(DiffAE); spatial (concat) conditioning widens the U-Net's input (`extra_in`, DGAE).

`build_denoiser` / `build_encoder` / `build_vae_encoder` make them from their config sections
(`model.denoiser.*`, `model.encoder.*`, arcdae_fast/config.py).
"""

from __future__ import annotations

from ..config.schema import ModelConfig
from .encoder import Codes, SemanticEncoder
from .layers import ARCHS
from .unet import UNet
from .vae import VAEEncoder

__all__ = [
    "ARCHS",
    "Codes",
    "SemanticEncoder",
    "UNet",
    "VAEEncoder",
    "build_denoiser",
    "build_encoder",
    "build_vae_encoder",
]


def build_denoiser(
    model: ModelConfig,
    resolution: int,
    cond_dim: int | None,
    channels: int = 3,
    extra_in: int = 0,
    cond_blocks: str = "all",
) -> UNet:
    """The denoiser of `model.denoiser` in `model.arch`, conditioned on a `cond_dim`-wide code
    by AdaGN (None: on time only) in every ResBlock or, `cond_blocks="up"`, in the decoding
    half only (DDAE++); images of `channels` channels (data.channels) in and out, and
    `extra_in` more input channels for a spatial code concatenated to the noisy image (DGAE)."""
    cfg = model.denoiser
    return UNet(
        resolution=resolution,
        base_channels=cfg.base_channels,
        channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=cfg.attn_resolutions,
        dropout=cfg.dropout,
        z_dim=cond_dim,
        embed_channels=cfg.embed_channels,
        num_heads=cfg.num_heads,
        head_channels=cfg.head_channels,
        max_groups=cfg.max_groups,
        arch=ARCHS[model.arch],
        in_channels=channels + extra_in,
        out_channels=channels,
        cond_blocks=cond_blocks,
    )


def build_encoder(
    model: ModelConfig,
    resolution: int,
    parts: tuple[int, int, int] | None = None,
    channels: int = 3,
) -> SemanticEncoder:
    """The semantic encoder of `model.encoder` in `model.arch`; `parts` = (K, d_k, d_p) adds
    ArcDAE's part head (SPEC section 3), None leaves it out."""
    cfg = model.encoder
    num_parts, key_dim, part_dim = parts or (0, 64, 128)
    return SemanticEncoder(
        resolution=resolution,
        in_channels=channels,
        base_channels=cfg.base_channels,
        channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=cfg.attn_resolutions,
        z_dim=cfg.z_dim,
        num_parts=num_parts,
        part_key_dim=key_dim,
        part_dim=part_dim,
        num_heads=cfg.num_heads,
        head_channels=cfg.head_channels,
        max_groups=cfg.max_groups,
        arch=ARCHS[model.arch],
    )


def build_vae_encoder(
    model: ModelConfig, resolution: int, latent_channels: int, channels: int = 3
) -> VAEEncoder:
    """DGAE's spatial VAE encoder (SD-VAE's layout) with `model.encoder`'s sizes: downsampling
    f = 2^(len(channel_mult) - 1), `latent_channels` channels."""
    cfg = model.encoder
    return VAEEncoder(
        resolution=resolution,
        in_channels=channels,
        latent_channels=latent_channels,
        base_channels=cfg.base_channels,
        channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks,
        attn_resolutions=cfg.attn_resolutions,
        max_groups=cfg.max_groups,
    )
