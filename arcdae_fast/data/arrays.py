"""Class-labelled images held in memory as arrays rather than files (data/layouts/
fashion_mnist.py, cifar10.py): they serve the same items as `ImageDataset` (image in
[-1, 1], index, label) through the torch DataLoader; DALI reads image files, so
data.loader=dali with these datasets is refused by name (data/loader.py).

Grey images (N, H, W) are served as 3 channels, replicated (data.channels=3, the default: the
same networks and augmentations as for photographs), or as one (data.channels=1: the networks
take and give one channel; docs/measurements.md compares the two). 28 px images are padded
with 2 black pixels a side to 32 px (Fashion-MNIST's background is black: padding adds no
content and changes no pixel); any other size is resized (bicubic, antialiased).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DataError, ImageDataset


class ArrayDataset(ImageDataset):
    """uint8 pixels (N, H, W) grey or (N, H, W, 3) RGB with class labels, served at
    `resolution` (28 px padded to 32 first) with `channels` channels (grey: 1 or 3)."""

    def __init__(
        self,
        pixels: np.ndarray,
        labels: np.ndarray,
        class_names: list[str],
        resolution: int,
        source: str,
        channels: int = 3,
    ):
        names = [f"{source}#{i}" for i in range(len(pixels))]
        super().__init__(names, resolution, labels=labels, class_names=class_names)
        if channels == 1 and pixels.ndim != 3:
            raise DataError(f"data.channels=1 needs grey images; {source} holds RGB images")
        self.pixels, self.source, self.channels = pixels, source, channels

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        idx = np.asarray(idx, dtype=np.int64)
        out = ArrayDataset(
            self.pixels[idx],
            self.labels[idx],
            self.class_names,
            self.resolution,
            self.source,
            self.channels,
        )
        out.files = [self.files[i] for i in idx]
        return out

    def image(self, idx: int, flip: bool = False) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.pixels[idx])).float()
        x = x.expand(self.channels, *x.shape) if x.ndim == 2 else x.permute(2, 0, 1)
        if x.shape[-1] == 28:  # Fashion-MNIST: 2 black pixels a side
            x = F.pad(x, (2, 2, 2, 2))
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x[None], size=self.resolution, mode="bicubic", antialias=True)[0]
            x = x.clamp(0, 255)
        if flip:
            x = x.flip(-1)
        return x.div(127.5).sub(1.0).contiguous()

    def __getitem__(self, key: int | tuple) -> dict:
        idx, flip = (tuple(key) + (False,))[:2] if isinstance(key, tuple) else (key, False)
        return {"image": self.image(idx, bool(flip)), "index": idx, "label": int(self.labels[idx])}
