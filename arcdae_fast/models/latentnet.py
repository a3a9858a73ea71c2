"""DiffAE's latent denoiser ("MLPSkipNet", phizaz/diffae model/latentnet.py), written here
from its description: an MLP over the (standardised, flattened) code whose every hidden layer
but the first also takes the noisy code itself (a skip concat), each conditioned on the
timestep by a scale: h = act(norm(linear(h) * (condition_bias + emb_l))), emb_l a per-layer
Linear of SiLU(time embedding); the last layer is a plain Linear. DiffAE's FFHQ-128 latent
model: 10 layers, 2048 wide, LayerNorm, SiLU, condition_bias 1, a 64-channel sinusoidal time
embedding through 2 Linear layers (SiLU between) to the code width, Kaiming-normal weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import timestep_embedding


class _Layer(nn.Module):
    def __init__(self, n_in: int, n_out: int, cond: int | None, norm: bool, act: bool, bias: float):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.cond = nn.Linear(cond, n_out) if cond else None
        self.norm = nn.LayerNorm(n_out) if norm else nn.Identity()
        self.act = nn.SiLU() if act else nn.Identity()
        self.bias = bias
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0, nonlinearity="relu")

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.linear(h)
        if self.cond is not None:
            h = h * (self.bias + self.cond(nn.functional.silu(emb)))
        return self.act(self.norm(h))


class MLPSkipNet(nn.Module):
    """net(z_t, t) -> eps prediction, z_t (B, D), t (B,) integer timesteps."""

    def __init__(
        self,
        dim: int,
        hidden: int = 2048,
        layers: int = 10,
        time_channels: int = 64,
        condition_bias: float = 1.0,
        norm: bool = True,
    ):
        super().__init__()
        if layers < 2:
            raise ValueError(f"the latent net needs at least 2 layers, got {layers}")
        self.dim, self.time_channels = dim, time_channels
        self.time_embed = nn.Sequential(
            nn.Linear(time_channels, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        blocks = []
        for i in range(layers):
            last = i == layers - 1
            n_in = (dim if i == 0 else hidden) + (dim if i > 0 else 0)
            n_out = dim if last else hidden
            blocks.append(
                _Layer(
                    n_in, n_out, None if last else dim, norm and not last, not last, condition_bias
                )
            )
        self.layers = nn.ModuleList(blocks)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.time_channels))
        h = z
        for i, layer in enumerate(self.layers):
            if i > 0:
                h = torch.cat([h, z], dim=1)
            h = layer(h, emb)
        return h
