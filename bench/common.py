"""Shared benchmark machinery: timing, peak memory, rooflines, CSV rows with the environment.

- GPU timing: triton.testing.do_bench (median; it flushes L2 between runs, so inputs are read
  cold) when Triton is importable, else CUDA events. CPU timing: median of repeated
  time.perf_counter runs after warm-up.
- Peak memory (arcdae_fast/measure.py): GPU, torch.cuda.max_memory_allocated above the
  allocation before the run. CPU, growth of the process's peak RSS (VmHWM) above the RSS
  before the run, with glibc's retained memory released first: it counts every byte the run
  touches, torch's or not.
- Roofline: measured in the same run on the same device (a large copy for bandwidth, a
  large matmul for FLOP/s), so ratios compare like with like.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch._functorch.config

from arcdae_fast.malloc import keep_freed_memory
from arcdae_fast.measure import peak_bytes, sync

RESULTS = Path(__file__).resolve().parent / "results"
# CPU runs: glibc keeps freed memory (arcdae_fast/malloc.py), so that timings measure the
# providers rather than page faults on freshly mapped memory; it applies to all providers.
keep_freed_memory()
# The "bwd" mode replays backward on one kept forward (retain_graph); torch.compile's donated
# backward buffers forbid that, so benchmarks turn donation off (a memory optimisation only).
torch._functorch.config.donated_buffer = False  # noqa: SLF001


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with its native-bf16 flags and the thread count
    (machines differ: AMX, AVX512-BF16 only, AVX2 only)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from arcdae_fast.step import cpu_bf16_flags

    model = _cpu_model() or platform.processor() or platform.machine()
    bf16 = "+".join(cpu_bf16_flags()) or "no native bf16"
    return f"cpu ({model}, {bf16}, {torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = (ln for ln in f if ln.startswith("model name"))
            return next((ln.split(":", 1)[1].strip() for ln in lines), "")
    except OSError:
        return ""


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "none"
    return {"torch": torch.__version__, "triton": tv, "python": platform.python_version()}


def time_ms(
    fn: Callable[[], object], device: torch.device, *, min_time: float = 0.5, max_reps: int = 200
) -> float:
    """Median milliseconds per call."""
    if device.type == "cuda":
        try:
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        except ImportError:
            pass
    fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@dataclass
class Roofline:
    gbps: float
    tflops: dict[str, float] = field(default_factory=dict)


def _copy_ms(n: int, device: torch.device) -> float:
    src = torch.empty(n, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    return time_ms(lambda: dst.copy_(src), device)


def measure_roofline(device: torch.device, dtypes: tuple[torch.dtype, ...]) -> Roofline:
    """Achievable copy bandwidth and matmul throughput on this device, measured now."""
    n = (1 << 28) if device.type == "cuda" else (1 << 25)  # 1 GiB / 128 MiB of float32
    gbps = 2 * n * 4 / _copy_ms(n, device) / 1e6
    tflops = {}
    m = 8192 if device.type == "cuda" else 1024
    for dt in dtypes:
        a = torch.randn(m, m, device=device).to(dt)
        b = torch.randn(m, m, device=device).to(dt)
        ms = time_ms(lambda a=a, b=b: a @ b, device)
        tflops[str(dt).replace("torch.", "")] = 2 * m**3 / ms / 1e9
    return Roofline(gbps, tflops)


@dataclass
class Row:
    bench: str
    provider: str
    mode: str
    shape: str
    dtype: str
    median_ms: float | None
    metric: str = ""  # "GB/s" or "TFLOP/s"
    value: float | None = None
    roofline_frac: float | None = None
    peak_mem_bytes: int | None = None
    note: str = ""


FIELDS = [
    "timestamp",
    "bench",
    "provider",
    "mode",
    "shape",
    "dtype",
    "median_ms",
    "metric",
    "value",
    "roofline_frac",
    "peak_mem_bytes",
    "note",
    "device",
    "torch",
    "triton",
    "python",
    "commit",
    "host",
]


def write_rows(rows: list[Row], device: torch.device, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    env = {
        "device": device_name(device),
        **versions(),
        "commit": git_commit(),
        "host": platform.node(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({**env, **r.__dict__})


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'provider':<22}{'mode':<9}{'shape':<30}{'dtype':<10}{'ms':>10}{'metric':>16}"
        f"{'roof%':>8}{'peak MB':>10}  note"
    )
    for r in rows:
        ms = f"{r.median_ms:.3f}" if r.median_ms is not None else "-"
        val = f"{r.value:.3g} {r.metric}" if r.value is not None else "-"
        roof = f"{100 * r.roofline_frac:.1f}" if r.roofline_frac is not None else "-"
        mem = f"{r.peak_mem_bytes / 1e6:.1f}" if r.peak_mem_bytes is not None else "-"
        print(
            f"{r.provider:<22}{r.mode:<9}{r.shape:<30}{r.dtype:<10}{ms:>10}{val:>16}"
            f"{roof:>8}{mem:>10}  {r.note}"
        )


def report(rows: list[Row], device: torch.device, out: str | None, bench: str) -> None:
    """Print the table and append the rows to --out (default bench/results/<bench>_<dev>.csv)."""
    print_rows(rows)
    write_rows(rows, device, Path(out) if out else RESULTS / f"{bench}_{device.type}.csv")


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: per device)")
    p.add_argument("--providers", default=None, help="comma-separated subset")
    p.add_argument("--modes", default="fwd,bwd,fwd+bwd")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=None, help="CSV to append to (default bench/results/)")
    return p


def run_modes(
    name: str,
    provider: str,
    fwd: Callable[[], object],
    bwd: Callable[[object, bool], object] | None,
    modes: list[str],
    shape: str,
    dtype: torch.dtype,
    device: torch.device,
    *,
    metric: Callable[[str, float], tuple[str, float, float | None]] | None = None,
    memory: bool = True,
    note: str = "",
) -> list[Row]:
    """Time fwd(), bwd(out, retain) on a kept forward output, and both, per mode."""
    rows = []
    for mode in modes:
        if mode != "fwd" and bwd is None:
            continue
        if mode == "fwd":
            fn = fwd
        elif mode == "bwd":
            kept = fwd()

            def fn(kept=kept):
                return bwd(kept, True)
        else:

            def fn():
                return bwd(fwd(), False)

        ms = time_ms(fn, device)
        met, val, frac = metric(mode, ms) if metric else ("", None, None)
        mem = peak_bytes(fn, device) if memory else None
        rows.append(
            Row(
                name,
                provider,
                mode,
                shape,
                str(dtype).replace("torch.", ""),
                ms,
                met,
                val,
                frac,
                mem,
                note,
            )
        )
    return rows


def fast_backends(op: str, device: torch.device, dtype: torch.dtype) -> list[str]:
    """Registered non-reference backends that `auto` could pick for this device and dtype."""
    from arcdae_fast.ops import _backends

    return [
        name
        for name, b in _backends.backends(op).items()
        if name != "reference"
        and not b.reasons(device, dtype)
        and b.priority.get(device.type, -1) >= 0
    ]


def select(chosen: dict, wanted: str | None) -> dict:
    return {k: v for k, v in chosen.items() if not wanted or k in wanted.split(",")}
