"""The InfoNCE alignment term (SPEC section 4) on `snr_weighted_infonce`, over the global batch
under data parallelism."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..ops import snr_weighted_infonce

# gather(rows, with_grad) -> every rank's rows, rank-major (arcdae_fast/distributed.py)
Gather = Callable[[torch.Tensor, bool], torch.Tensor]


class InfoNCE:
    """`loss(query, key, weight=None, gather=None)`: student rows against teacher rows (the
    keys, stop-grad), per-row weights w (the TGA gate for part tokens; None: 1).

    With `gather` (data parallelism) every rank gathers all ranks' student codes (with
    gradient: the gather's backward sums each rank's contribution back to the rows' owner),
    teacher codes and weights, and computes the same global loss, so that averaging the
    gradients over ranks gives the single-process gradient."""

    def __init__(self, temperature: float = 0.1, symmetric: bool = False):
        self.temperature, self.symmetric = temperature, symmetric

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        weight: torch.Tensor | None = None,
        gather: Gather | None = None,
    ) -> torch.Tensor:
        if gather is not None:
            query, key = gather(query, True), gather(key, False)
            weight = None if weight is None else gather(weight, False)
        return snr_weighted_infonce(query, key, weight, self.temperature, symmetric=self.symmetric)
