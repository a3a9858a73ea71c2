"""Image tensors in the engine: float (B, C, H, W) in [-1, 1], C = data.channels (3, or 1 for
grey datasets trained as one channel). What takes RGB only (image files, Inception, LPIPS's
feature networks, the augmentation's colour transforms) sees a grey image replicated."""

from __future__ import annotations

import torch


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 3, H, W) by replication; RGB images unchanged."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
