"""Measurement shared by the profiler and the benchmarks: peak memory, FLOPs per step, peaks.

- CUDA: torch.cuda.max_memory_allocated, reset on entry.
- CPU: the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs on
  entry): it counts every byte touched, torch's or not. With release=True glibc first hands
  back the memory it keeps for reuse (arcdae_fast/malloc.py), which would otherwise hide how
  much a block touches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .malloc import keep_freed_memory, release_freed_memory


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


class PeakMemory:
    """`with PeakMemory(device) as pm: ...`; then pm.peak (bytes in use at the peak, None
    where it cannot be read) and pm.above (the peak minus the bytes in use on entry)."""

    def __init__(self, device: torch.device, release: bool = False):
        self.device, self.release = device, release
        self.peak: int | None = None
        self.above: int | None = None

    def __enter__(self) -> PeakMemory:
        sync(self.device)
        self._base = None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        if self.release:
            release_freed_memory()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self._base = _proc_status("VmRSS:")
        except (OSError, RuntimeError):
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._base is not None:
            self.peak = _proc_status("VmHWM:")
        if self.release:
            keep_freed_memory()
        if self.peak is not None:
            self.above = max(0, self.peak - self._base)


def peak_bytes(fn, device: torch.device) -> int | None:
    """Peak memory one call of fn needs above what was in use before it."""
    fn()  # warm-up: lazy initialisation is not the call's memory
    with PeakMemory(device, release=True) as pm:
        fn()
    return pm.above


# Dense tensor-core peaks from NVIDIA's datasheets, TFLOP/s: (bf16, tf32; fp32 runs use TF32
# tensor cores for convolutions by default). First match on the device name wins.
KNOWN_PEAKS = (
    ("H100 PCIe", 756.5, 378.0),
    ("H100 NVL", 835.5, 417.5),
    ("H200 NVL", 835.5, 417.5),
    ("H100", 989.4, 494.7),
    ("H200", 989.4, 494.7),
    ("A100", 312.0, 156.0),
)


def known_peak(device: torch.device, bf16: bool) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, p_bf16, p_tf32 in KNOWN_PEAKS:
        if key in name:
            return p_bf16 if bf16 else p_tf32
    return None


def count_flops(method: Any, x0: torch.Tensor, inputs: Any, precision: str) -> float:
    """FLOPs of one training step of a method (eager forward + backward, matmul and
    convolution FLOPs; the custom ops register theirs), averaged over its flag schedule (e.g.
    a lazy Jacobian term)."""
    from .step import autocast_for

    total, steps = 0.0, 0
    for flags, times in method.flag_mix():
        method.zero_grad(set_to_none=True)
        with FlopCounterMode(display=False) as counter:
            with autocast_for(x0.device, precision):
                out = method(x0, inputs, **flags)
            out["loss"].backward()
        total += counter.get_total_flops() * times
        steps += times
    method.zero_grad(set_to_none=True)
    return total / steps
