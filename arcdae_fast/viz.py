"""PNG grids of reconstructions from the EMA weights. Rows: the originals; their DDIM decoding
from the DDIM-inverted x_T (the autoencoding reconstruction); their decoding from a random x_T
(the "tractable" setting, which needs a well-trained model to look clean)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .diffusion import VPSchedule, ddim_invert, ddim_sample


def to_grid(rows: list[torch.Tensor]) -> Image.Image:
    """rows: tensors (N, 3, H, W) in [-1, 1] -> one image, a row per tensor."""
    arr = torch.stack([torch.cat(list(r.float().clamp(-1, 1)), dim=2) for r in rows])
    arr = torch.cat(list(arr), dim=1)  # (3, rows*H, N*W)
    arr = ((arr + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


@torch.no_grad()
def reconstruction_grid(
    path: Path,
    encoder: torch.nn.Module,
    denoiser: torch.nn.Module,
    x0: torch.Tensor,
    schedule: VPSchedule,
    *,
    steps: int,
    param: str,
    seed: int = 0,
) -> Path:
    """Encode x0, decode with DDIM from inverted and from random x_T; save the grid as PNG."""
    was = encoder.training, denoiser.training
    encoder.eval()
    denoiser.eval()
    try:
        z = encoder(x0, parts=False).holo
        g = torch.Generator(device=x0.device).manual_seed(seed)
        x_T = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
        rows = [x0]
        for start in (ddim_invert(denoiser, x0, z, schedule, steps=steps, param=param), x_T):
            rows.append(ddim_sample(denoiser, z, schedule, start, steps=steps, param=param))
    finally:
        encoder.train(was[0])
        denoiser.train(was[1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_grid(rows).save(path)
    return path
