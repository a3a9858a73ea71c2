"""CPU memory-allocator tuning for training and benchmarks.

PyTorch's CPU tensors come from malloc. With glibc's defaults, each activation-sized tensor
freed at the end of a step is handed back to the kernel (trimmed or munmapped) and the next
step faults every page in again, zero-filled: on CPU training that costs as much as the ops
themselves. `keep_freed_memory()` asks glibc (mallopt) to keep freed memory for reuse, the
effect of the jemalloc/tcmalloc advice in CPU tuning guides. Resident memory then stays at
the step's peak instead of returning to the OS between steps.

Off with ARCDAE_FAST_MALLOC_TUNING=0; a no-op where glibc is not the C library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
_LIMIT = 1 << 30  # keep up to 1 GiB free at the top of the heap; mmap only above 1 GiB


_DEFAULT = 128 * 1024  # glibc's initial thresholds


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError, TypeError):
        return None


def keep_freed_memory() -> bool:
    """Returns True when the allocator was tuned."""
    libc = _libc()
    if os.environ.get("ARCDAE_FAST_MALLOC_TUNING", "1") == "0" or libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, _LIMIT)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, _LIMIT)
    )


def release_freed_memory() -> bool:
    """Back to glibc's initial thresholds, and hand the retained memory back to the OS (for
    measurements of how much memory an operation touches)."""
    libc = _libc()
    if libc is None:
        return False
    libc.mallopt(M_MMAP_THRESHOLD, _DEFAULT)
    libc.mallopt(M_TRIM_THRESHOLD, _DEFAULT)
    libc.malloc_trim(0)
    return True
