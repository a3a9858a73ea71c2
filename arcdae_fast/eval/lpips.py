"""LPIPS (Zhang et al. 2018, v0.1) with an AlexNet backbone: the distance the reconstruction
literature (DiffAE, ArcDAE) reports, on images in [-1, 1].

    d(x, y) = sum_l mean_hw || w_l * (n(f_l(x)) - n(f_l(y))) ||^2

f_l: AlexNet's five ReLU outputs (torchvision's `features` layout, so its ImageNet weights
load as they are), n: unit length over channels (eps 1e-10), w_l: the learned non-negative
per-channel weights (LPIPS v0.1's 1x1 convs), inputs shifted and scaled as LPIPS does. Built
without weights it is randomly initialised (the tests); `LPIPS.from_files` loads the two
pretrained files (arcdae_fast/eval/weights.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .weights import ALEXNET, LPIPS_ALEX

# LPIPS's ScalingLayer: (x - shift) / scale on [-1, 1] inputs
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
TAPS = (1, 4, 7, 9, 11)  # the ReLUs after conv1..conv5 in torchvision's alexnet.features
CHANNELS = (64, 192, 384, 256, 256)


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet `features` (same layer indices, so its state dict loads)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(3, 2),
    )


class LPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        for lin in self.lins:
            nn.init.uniform_(lin.weight, 0.0, 1.0 / lin.weight.shape[1])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, weights_dir: str | None = None) -> LPIPS:
        net = cls()
        alex = torch.load(ALEXNET.find(weights_dir), map_location="cpu", weights_only=True)
        net.features.load_state_dict(
            {k.removeprefix("features."): v for k, v in alex.items() if k.startswith("features.")}
        )
        lins = torch.load(LPIPS_ALEX.find(weights_dir), map_location="cpu", weights_only=True)
        for i, lin in enumerate(net.lins):
            lin.weight.copy_(lins[f"lin{i}.model.1.weight"])
        return net

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h)
            if i == TAPS[-1]:
                break
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distances (B,) of x, y (B, 3, H, W) in [-1, 1], in float32."""
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for fx, fy, lin in zip(self.taps(x.float()), self.taps(y.float()), self.lins):
            nx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total += lin((nx - ny).square()).mean(dim=(1, 2, 3))
        return total
