"""`python -m arcdae_fast.profile --config ffhq.yaml [--steps 20] [--variant compiled|eager]
[--trace FILE] [--json FILE] [--peak-tflops F] [--batch-size B] [section.key=value ...]`

Where the time of a training step goes. Builds the model, optimizer and step exactly as the
trainer does (train.step picks the variant unless --variant is given), then:
1. warm-up steps (compilation included), timed apart and excluded from everything else;
2. --steps timed steps (synchronised): median ms/step, img/s, peak memory (CUDA: the
   allocator's peak, weights and optimizer state included; CPU: the process's peak RSS);
3. FLOPs per step: one eager forward + backward under torch.utils.flop_counter (matmul and
   convolution FLOPs; the custom ops register theirs), averaged over the Jacobian schedule;
   MFU = FLOPs / time / peak, the peak from --peak-tflops or known for the GPU;
4. the same steps under torch.profiler: time per phase (the arcdae::* ranges of
   arcdae_fast/phases.py: data, augmentation, teacher, student encoder, denoiser fwd/bwd,
   losses, optimizer, ...) and the top operators / kernels; --trace writes the Chrome /
   Perfetto trace.
Inside the compiled step the compiler fuses across phases: its forward and
backward show as one phase each.

Without the preset's dataset (FFHQ and CelebA need data.root) it profiles on random images of
the preset's resolution, pre-generated on the device (--data synthetic forces this, --data
real refuses the fallback); the table says which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from . import errors, session
from . import log as logs
from .checkpoint import atomic_write
from .config.load import load_config
from .errors import doing, make_dir
from .measure import PeakMemory, count_flops, known_peak, sync
from .phases import BACKWARD, PREFIX, STEP, phase


class _DenoiserBackwardRange:
    """Eager step only: the denoiser's backward as an arcdae::denoiser bwd range (module
    backward hooks; its last parameter gradients may land just after the range)."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.ctx, self.handles = module, None, []

    def __enter__(self) -> _DenoiserBackwardRange:
        def start(mod, grad_out):
            self.ctx = phase("denoiser bwd")
            self.ctx.__enter__()

        def end(mod, grad_in, grad_out):
            if self.ctx is not None:
                self.ctx.__exit__(None, None, None)
                self.ctx = None

        self.handles = [
            self.module.register_full_backward_pre_hook(start),
            self.module.register_full_backward_hook(end),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()


def _times(e: Any, cuda: bool) -> tuple[float, float | None, float | None]:
    """(cpu total, device total, device self) microseconds of a profiler event."""
    if not cuda:
        return e.cpu_time_total, None, None
    dev = getattr(e, "device_time_total", None)
    dev = getattr(e, "cuda_time_total", 0.0) if dev is None else dev
    self_dev = getattr(e, "self_device_time_total", None)
    self_dev = getattr(e, "self_cuda_time_total", 0.0) if self_dev is None else self_dev
    return e.cpu_time_total, dev, self_dev


def summarize(prof: profile, steps: int, cuda: bool, top: int) -> tuple[dict, list]:
    """Per-phase ms/step (CPU wall, and on CUDA the kernels' device time) and top ops."""
    phases: dict[str, dict[str, float | None]] = {}
    ops = []
    for e in prof.key_averages():
        cpu, dev, self_dev = _times(e, cuda)
        if e.key.startswith(PREFIX):
            name = e.key[len(PREFIX) :]
            phases[name] = {
                "ms_per_step": cpu / 1e3 / steps,
                "device_ms_per_step": None if dev is None else dev / 1e3 / steps,
            }
        elif not e.key.startswith("ProfilerStep"):
            self_t = self_dev if cuda else e.self_cpu_time_total
            ops.append((e.key, self_t / 1e3 / steps, e.count // steps))
    ops.sort(key=lambda r: -r[1])
    top_ops = [{"name": n, "self_ms_per_step": t, "calls_per_step": c} for n, t, c in ops[:top]]
    return phases, top_ops


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="a YAML file or a packaged preset")
    p.add_argument("--steps", type=int, default=10, help="measured steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps (compilation; default 3)")
    p.add_argument(
        "--variant",
        choices=("compiled", "eager", "fast", "reference"),
        default=None,
        help="the step to profile (default: the config's train.step; fast and reference are "
        "the old names of compiled and eager)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="same as train.batch_size=B")
    p.add_argument("--data", choices=("auto", "real", "synthetic"), default="auto")
    p.add_argument("--trace", default=None, help="write a Chrome/Perfetto trace (JSON) here")
    p.add_argument("--json", default=None, help="write the results as a JSON object here")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak TFLOP/s for MFU (default: known for the GPU)",
    )
    p.add_argument("--top", type=int, default=15, help="top operators / kernels listed")
    logs.add_flags(p)
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    a = p.parse_args(argv)
    for name in ("steps", "top"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    if a.peak_tflops is not None and a.peak_tflops <= 0:
        p.error("--peak-tflops must be positive")
    return a


DATA_MODES = {"auto": "optional", "real": "required", "synthetic": "none"}


def run(args: argparse.Namespace) -> dict[str, Any]:
    sets = list(args.overrides)
    sets += [f"train.step={args.variant}"] if args.variant else []
    sets += [f"train.batch_size={args.batch_size}"] if args.batch_size else []
    cfg = load_config(args.config, sets)
    tc = cfg.train
    s = session.build(cfg, data=DATA_MODES[args.data])
    if args.data == "synthetic":
        s.data_note = "--data synthetic"
    device, method = s.device, s.method
    next_batch, data_note = s.batches()

    def one_step(i: int) -> None:
        with phase("data"):
            x0 = next_batch()
        with phase("draw inputs"):
            inputs = s.inputs(x0, i)
        s.step(x0, inputs, i)

    t0 = time.perf_counter()
    for i in range(args.warmup):
        one_step(i)
    sync(device)
    warmup_s = time.perf_counter() - t0

    x0 = next_batch()
    flops = count_flops(method, x0, s.inputs(x0, 0), tc.precision)

    times = []
    with PeakMemory(device) as mem:
        for i in range(args.warmup, args.warmup + args.steps):
            t = time.perf_counter()
            one_step(i)
            sync(device)
            times.append((time.perf_counter() - t) * 1e3)
    ms = statistics.median(times)

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    hooks = (
        _DenoiserBackwardRange(method.trainable()["denoiser"])
        if s.step_kind == "eager"
        else contextlib.nullcontext()
    )
    start = args.warmup + args.steps
    with hooks, profile(activities=acts) as prof:
        t = time.perf_counter()
        for i in range(start, start + args.steps):
            one_step(i)
        sync(device)
        profiled_ms = (time.perf_counter() - t) * 1e3 / args.steps
    if args.trace:
        make_dir(Path(args.trace).parent)
        with doing("write the trace", args.trace):
            prof.export_chrome_trace(str(args.trace))
    phases, top_ops = summarize(prof, args.steps, cuda, args.top)

    bf16 = s.precision != "fp32"
    peak = args.peak_tflops or known_peak(device, bf16)
    achieved = flops / (ms / 1e3) / 1e12
    return {
        "config": args.config,
        "method": cfg.method.name,
        "variant": s.step_kind,
        "step_reason": s.step_reason,
        "compile_mode": tc.compile_mode if s.step_kind == "compiled" else None,
        "device": torch.cuda.get_device_name(device)
        if cuda
        else f"cpu ({torch.get_num_threads()} threads)",
        "precision": s.precision,
        "batch_size": tc.batch_size,
        "resolution": cfg.data.resolution,
        "data": data_note,
        "warmup_steps": args.warmup,
        "warmup_s": warmup_s,
        "steps": args.steps,
        "ms_per_step": ms,
        "ms_per_step_min": min(times),
        "ms_per_step_max": max(times),
        "img_per_s": tc.batch_size * len(times) / (sum(times) / 1e3),
        "peak_mem_bytes": mem.peak,
        "flops_per_step": flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": None if peak is None else achieved / peak,
        "profiled_ms_per_step": profiled_ms,
        "forward_phases": list(method.PHASES),
        "phases": phases,
        "top_ops": top_ops,
        "torch": torch.__version__,
    }


def _fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def print_report(r: dict[str, Any]) -> None:
    out = sys.stdout
    print(
        f"{r['config']} ({r['method']}): step {r['variant']}"
        + (f" ({r['compile_mode']})" if r["compile_mode"] else "")
        + f", {r['precision']}, batch {r['batch_size']} at {r['resolution']} px on {r['device']}",
        file=out,
    )
    print(f"data: {r['data']}", file=out)
    print(f"step choice: {r['step_reason']}", file=out)
    print(f"warm-up: {r['warmup_steps']} steps in {r['warmup_s']:.1f} s (excluded)", file=out)
    print(
        f"step: {r['ms_per_step']:.2f} ms median over {r['steps']} (min {r['ms_per_step_min']:.2f},"
        f" max {r['ms_per_step_max']:.2f}) | {r['img_per_s']:.1f} img/s | peak memory "
        f"{_fmt_bytes(r['peak_mem_bytes'])}",
        file=out,
    )
    mfu = (
        f"MFU {100 * r['mfu']:.1f}% of {r['peak_tflops']:.1f} TFLOP/s"
        if r["mfu"] is not None
        else "MFU n/a (no known peak for this device: pass --peak-tflops)"
    )
    print(
        f"FLOPs/step: {r['flops_per_step']:.4g} ({r['flops_per_step'] / r['batch_size']:.4g} per "
        f"image) | {r['achieved_tflops']:.3f} TFLOP/s | {mfu}",
        file=out,
    )
    total = r["profiled_ms_per_step"]
    subs = {"forward": tuple(r["forward_phases"]), "backward": BACKWARD}
    dev = any(v["device_ms_per_step"] is not None for v in r["phases"].values())
    print(
        f"\nphases (under the profiler: {total:.2f} ms/step)\n"
        f"{'phase':<26}{'ms/step':>10}{'share':>8}" + (f"{'device ms':>12}" if dev else ""),
        file=out,
    )

    def row(name: str, indent: str) -> None:
        v = r["phases"].get(name)
        if v is None:
            if indent and r["variant"] == "compiled" and name in subs["forward"] + BACKWARD:
                print(f"{indent + name:<26}{'(in the compiled graph)':>18}", file=out)
            return
        d = v["device_ms_per_step"]
        extra = f"{d:>12.2f}" if dev and d is not None else ""
        share = 100 * v["ms_per_step"] / total
        print(f"{indent + name:<26}{v['ms_per_step']:>10.2f}{share:>7.1f}%{extra}", file=out)

    for name in STEP:
        row(name, "")
        for sub in subs.get(name, ()):
            row(sub, "  ")
    top = "device" if dev else "CPU"
    print(f"\ntop operators by self {top} time", file=out)
    for o in r["top_ops"]:
        print(
            f"  {o['self_ms_per_step']:>9.3f} ms/step  {o['calls_per_step']:>5}x  {o['name'][:90]}",
            file=out,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> int:
        if args.json:  # before the minutes of measuring, not after
            make_dir(Path(args.json).parent)
            errors.check_writable(Path(args.json).parent)
        result = run(args)
        print_report(result)
        if args.json:
            atomic_write(
                Path(args.json),
                lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()),
                "the results",
            )
        return 0

    return errors.run(work)


if __name__ == "__main__":
    sys.exit(main())
