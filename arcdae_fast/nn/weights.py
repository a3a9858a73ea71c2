"""Pretrained feature networks for the metrics and the perceptual training loss, from local
files (these machines cannot download, and no pip package ships the weights).

Each file is looked for in `eval.weights_dir`, then $ARCDAE_FAST_WEIGHTS, then torch.hub's
cache (`<torch.hub.get_dir()>/checkpoints`, where torch-fidelity and torchvision put their
downloads), and verified against its checksum. Absent, the suite that needs it stops with one
line naming the file, where it was looked for and where to get it; suites that need no
weights (probe, regress, tad, reconstruction MSE/PSNR/SSIM) run regardless, and a method
whose perceptual weight is 0 needs none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import sha256
from ..errors import UserError

ENV_VAR = "ARCDAE_FAST_WEIGHTS"


class WeightsError(UserError, FileNotFoundError):
    """A feature network's weights are missing or do not match their checksum."""


@dataclass(frozen=True)
class WeightsFile:
    name: str  # the file name looked for
    sha256: str  # the checksum (a prefix, as torch.hub checks it, or the full digest)
    url: str  # where to get it
    what: str  # what it is, for messages

    def find(self, weights_dir: str | None = None) -> Path:
        """The verified file, or WeightsError saying what to do."""
        places = search_path(weights_dir)
        for folder in places:
            path = folder / self.name
            if path.is_file():
                digest = sha256(path)
                if not digest.startswith(self.sha256):
                    raise WeightsError(
                        f"{path} is not {self.what}: its sha256 is {digest[:16]}..., expected "
                        f"{self.sha256[:16]}...; download it again from {self.url}"
                    )
                return path
        where = ", ".join(str(p) for p in places)
        raise WeightsError(
            f"{self.what} needs the file {self.name} (looked in {where}); download {self.url} "
            f"into one of them or set eval.weights_dir (sha256 starts with {self.sha256[:8]})"
        )


def search_path(weights_dir: str | None = None) -> list[Path]:
    places = [Path(weights_dir).expanduser()] if weights_dir else []
    if os.environ.get(ENV_VAR):
        places.append(Path(os.environ[ENV_VAR]).expanduser())
    places.append(Path(torch.hub.get_dir()) / "checkpoints")
    return places


# the standard FID network: the TF Inception-V3 graph of 2015-12-05 as torch-fidelity (and
# pytorch-fid) port it; the hash is the one in torch-fidelity's and pytorch-fid's file names
INCEPTION = WeightsFile(
    "weights-inception-2015-12-05-6726825d.pth",
    "6726825d",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
    "the FID Inception-V3",
)
# LPIPS (Zhang et al. 2018) with AlexNet: torchvision's ImageNet AlexNet and LPIPS v0.1's
# linear layers (lpips/weights/v0.1/alex.pth in the lpips package, saved here as this name)
ALEXNET = WeightsFile(
    "alexnet-owt-7be5be79.pth",
    "7be5be79",
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "the LPIPS AlexNet backbone",
)
LPIPS_ALEX = WeightsFile(
    "lpips-v0.1-alex.pth",
    "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
    "the LPIPS v0.1 AlexNet linear layers",
)
# LPIPS with VGG-16 (the perceptual training loss of DGAE / SD-VAE): torchvision's ImageNet
# VGG-16 and LPIPS v0.1's linear layers for it (lpips/weights/v0.1/vgg.pth)
VGG16 = WeightsFile(
    "vgg16-397923af.pth",
    "397923af",
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    "the LPIPS VGG-16 backbone",
)
LPIPS_VGG = WeightsFile(
    "lpips-v0.1-vgg.pth",
    "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
    "the LPIPS v0.1 VGG-16 linear layers",
)
