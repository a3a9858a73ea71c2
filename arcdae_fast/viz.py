"""PNG grids of reconstructions from the EMA weights. Rows: the originals; their decoding from
the inverted x_T (the autoencoding reconstruction); their decoding from a random x_T (the
"tractable" setting, which needs a well-trained model to look clean). Any method: through
its encode / invert / decode."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import atomic_write
from .images import as_rgb
from .methods import Method


def to_grid(rows: list[torch.Tensor]) -> Image.Image:
    """rows: tensors (N, 3 or 1, H, W) in [-1, 1] -> one RGB image, a row per tensor."""
    arr = torch.stack([torch.cat(list(as_rgb(r).float().clamp(-1, 1)), dim=2) for r in rows])
    arr = torch.cat(list(arr), dim=1)  # (3, rows*H, N*W)
    arr = ((arr + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


@torch.no_grad()
def reconstruction_grid(
    path: Path,
    method: Method,
    x0: torch.Tensor,
    *,
    nets: Mapping[str, torch.nn.Module] | None = None,
    steps: int,
    seed: int = 0,
) -> Path:
    """Encode x0, decode from the inverted and from a random x_T (the method's sampler, on
    `nets`: e.g. the evaluation EMA); save the grid as PNG."""
    z = method.encode(x0, nets)
    g = torch.Generator(device=x0.device).manual_seed(seed)
    x_T = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
    rows = [x0]
    for start in (method.invert(x0, z, steps=steps, nets=nets), x_T):
        rows.append(method.decode(z, start, steps=steps, nets=nets))
    path = Path(path)
    grid = to_grid(rows)
    # atomic: a full disk leaves the previous grids and no 0-byte PNG
    atomic_write(path, lambda f: grid.save(f, format="PNG"), "the sample grid")
    return path
