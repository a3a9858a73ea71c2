"""LPIPS (Zhang et al. 2018, v0.1) on images in [-1, 1], with an AlexNet backbone (the
distance the reconstruction literature reports: DiffAE, ArcDAE) or a VGG-16 one (the
perceptual training loss of SD-VAE and DGAE):

    d(x, y) = sum_l mean_hw || w_l * (n(f_l(x)) - n(f_l(y))) ||^2

f_l: the backbone's five tapped ReLU outputs (torchvision's `features` layouts, so its
ImageNet weights load as they are), n: unit length over channels (eps 1e-10), w_l: the
learned non-negative per-channel weights (LPIPS v0.1's 1x1 convs), inputs shifted and scaled
as LPIPS does. Built without weights it is randomly initialised (the tests);
`LPIPS.from_files` loads the two pretrained files of its backbone (nn/weights.py).

The forward is differentiable (a training loss); the evaluation calls it under no_grad. The
network's own parameters never train.
"""

from __future__ import annotations

import torch
from torch import nn

from ..images import as_rgb
from .weights import ALEXNET, LPIPS_ALEX, LPIPS_VGG, VGG16

# LPIPS's ScalingLayer: (x - shift) / scale on [-1, 1] inputs
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _features(spec: list) -> nn.Sequential:
    """torchvision's `features` from a layer list: (in, out, kernel, stride, pad) for a conv
    (followed by a ReLU), "M3" / "M2" for max pooling (kernel 3 stride 2 / kernel 2)."""
    layers: list[nn.Module] = []
    for s in spec:
        if s == "M3":
            layers.append(nn.MaxPool2d(3, 2))
        elif s == "M2":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(s[0], s[1], s[2], stride=s[3], padding=s[4]), nn.ReLU()]
    return nn.Sequential(*layers)


def _vgg16() -> list:
    spec: list = []
    cin = 3
    for block in ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3):
        for c in block:
            spec.append((cin, c, 3, 1, 1))
            cin = c
        spec.append("M2")
    return spec


# per backbone: layer list, the tapped ReLU indices in `features`, their channels, weights
BACKBONES = {
    "alex": (
        [(3, 64, 11, 4, 2), "M3", (64, 192, 5, 1, 2), "M3", (192, 384, 3, 1, 1),
         (384, 256, 3, 1, 1), (256, 256, 3, 1, 1), "M3"],
        (1, 4, 7, 9, 11),
        (64, 192, 384, 256, 256),
        (ALEXNET, LPIPS_ALEX),
        32,  # the smallest input side its pooling takes
    ),
    "vgg": (_vgg16(), (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), (VGG16, LPIPS_VGG), 16),
}  # fmt: skip


class LPIPS(nn.Module):
    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in BACKBONES:
            raise ValueError(f"LPIPS backbone must be one of {sorted(BACKBONES)}, got {net!r}")
        spec, self.taps_at, channels, self.files, self.min_size = BACKBONES[net]
        self.net = net
        self.features = _features(spec)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        for lin in self.lins:
            nn.init.uniform_(lin.weight, 0.0, 1.0 / lin.weight.shape[1])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, weights_dir: str | None = None, net: str = "alex") -> LPIPS:
        """The pretrained LPIPS: the backbone's ImageNet file and LPIPS v0.1's linear layers,
        found and verified by nn/weights.py (a WeightsError naming the file when absent)."""
        out = cls(net)
        backbone, lin_file = out.files
        state = torch.load(backbone.find(weights_dir), map_location="cpu", weights_only=True)
        out.features.load_state_dict(
            {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        )
        lins = torch.load(lin_file.find(weights_dir), map_location="cpu", weights_only=True)
        for i, lin in enumerate(out.lins):
            lin.weight.copy_(lins[f"lin{i}.model.1.weight"])
        return out

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # a fixed metric: never in training mode

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps_at:
                out.append(h)
            if i == self.taps_at[-1]:
                break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distances (B,) of x, y (B, 3, H, W) in [-1, 1] (grey (B, 1, H, W):
        replicated), computed in float32 (autocast off); differentiable in x and y."""
        x, y = as_rgb(x), as_rgb(y)
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"LPIPS ({self.net}) needs images of at least {self.min_size} px, got "
                f"{tuple(x.shape[-2:])}"
            )
        with torch.autocast(x.device.type, enabled=False):
            total = x.new_zeros(x.shape[0], dtype=torch.float32)
            for fx, fy, lin in zip(self.taps(x.float()), self.taps(y.float()), self.lins):
                nx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
                ny = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + lin((nx - ny).square()).mean(dim=(1, 2, 3))
        return total
