"""The batch order shared by both input pipelines (torch DataLoader and DALI).

The batch order is a pure function of (seed, step): each epoch is a fresh permutation of the
dataset drawn from seed + epoch, cut into full global batches (the remainder of an epoch is
dropped, and a different one each epoch), so a resumed run sees exactly the batches it would
have seen without stopping. With world_size > 1 each rank takes its slice of every global
batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .datasets import DataError


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Yields lists of (index, flip) for steps start_step, start_step + 1, ... forever; with
    random_crop, (index, flip, (x, y)): the crop window's position in [0, 1]^2 (drawn after the
    flips, so that the flips and the order are those of random_crop=False)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        start_step: int = 0,
        flip: bool = False,
        random_crop: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        global_batch = batch_size * world_size
        if n < global_batch:
            raise DataError(
                f"the dataset has {n} images, fewer than one global batch "
                f"(train.batch_size={batch_size} x {world_size} rank(s))"
            )
        self.n, self.batch, self.seed, self.start = n, batch_size, seed, start_step
        self.flip, self.random_crop, self.rank, self.world = flip, random_crop, rank, world_size
        self.per_epoch = n // global_batch

    def batch_at(self, step: int) -> list[tuple]:
        epoch, k = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g)
        flips = torch.rand(self.n, generator=g) < 0.5
        lo = (k * self.world + self.rank) * self.batch
        idx = perm[lo : lo + self.batch]
        if not self.random_crop:
            return [(int(i), bool(flips[i]) and self.flip) for i in idx]
        at = torch.rand(self.n, 2, generator=g, dtype=torch.float64).tolist()
        return [(int(i), bool(flips[i]) and self.flip, tuple(at[i])) for i in idx]

    def __iter__(self) -> Iterator[list[tuple]]:
        step = self.start
        while True:
            yield self.batch_at(step)
            step += 1

    def __len__(self) -> int:  # infinite stream; DataLoader only needs a number
        return 2**62
