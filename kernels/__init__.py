"""Triton kernels (installed as `arcdae_fast.kernels`). This file does not import Triton; the
kernel modules do.

Interpreter mode (TRITON_INTERPRET=1, kernels run on CPU tensors) is fixed when the kernels
are decorated, i.e. at import: `INTERPRET` records it.
"""

import os

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_pow2(n: int, floor: int = 16) -> int:
    """Smallest power of two >= max(n, floor) (tl.dot needs tiles of at least 16)."""
    p = floor
    while p < n:
        p *= 2
    return p
