"""Benchmark the training step on the same config, batch, weights and inputs: the eager
reference in fp32 (eager-fp32); the eager step in bf16 autocast, contiguous (eager-bf16)
and channels_last (eager-bf16-cl), where the device computes bf16 natively (CUDA, or a CPU
with AMX / AVX512-BF16); and the compiled step as the trainer runs it (compiled).

    python bench/bench_step.py [--config quickstart.yaml] [--batch-size B] [--rounds 5]
        [--steps 4] [--variants eager-fp32,eager-bf16,eager-bf16-cl,compiled] [--out CSV]
Each variant gets its own copy of the same initial weights. After warm-up (compilation
excluded), the variants run interleaved, --steps steps each per round, so that machine noise
falls on all of them alike; img/s is the batch over the median step time. Data loading is
excluded (a pool of batches from the config's dataset, or random images when it has none, is
kept on the device; `python -m arcdae_fast.profile` measures the input pipeline). Peak
memory: what one step needs above the state resident before it (activations, workspace).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Row, report  # noqa: E402

from arcdae_fast import session  # noqa: E402
from arcdae_fast.config import load_config  # noqa: E402
from arcdae_fast.measure import count_flops, known_peak, peak_bytes, sync  # noqa: E402
from arcdae_fast.step import native_bf16, uses_bf16  # noqa: E402

VARIANTS = ("eager-fp32", "eager-bf16", "eager-bf16-cl", "compiled")


def make_variant(name: str, base: session.Session):
    """(session, precision, channels_last input) of one variant, on a copy of base's weights."""
    tc = base.cfg.train
    if name == "eager-fp32":
        return base.fork(step="eager", precision="fp32"), "fp32", False
    if name.startswith("eager-bf16"):
        s = base.fork(step="eager", precision="bf16")
        cl = name.endswith("-cl")
        if cl:
            s.method.to(memory_format=torch.channels_last)
        return s, "bf16", cl
    s = base.fork(step="compiled")
    return s, ("bf16" if uses_bf16(s.device, tc.precision) else "fp32"), s.step.channels_last


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="quickstart.yaml")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--data", choices=("auto", "synthetic"), default="auto")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=None, help="CSV to append to (default bench/results/)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    a = p.parse_args(argv)
    sets = list(a.overrides) + ([f"train.batch_size={a.batch_size}"] if a.batch_size else [])
    cfg = load_config(a.config, sets)
    tc = cfg.train
    device = session.pick_device(tc.device)
    wanted = [v for v in a.variants.split(",") if v]
    unknown = set(wanted) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    for name in ("eager-bf16", "eager-bf16-cl"):
        if name in wanted and not native_bf16(device):
            print(f"skipping {name}: no native bf16 on this device", file=sys.stderr)
            wanted.remove(name)

    base = session.build(cfg, data="none" if a.data == "synthetic" else "optional")
    if a.data == "synthetic":
        base.data_note = "--data synthetic"
    next_batch, data_note = base.batches()
    pool = [next_batch() for _ in range(4)]
    flops = count_flops(base.method, pool[0], base.inputs(pool[0], 0), "fp32")
    steps = {name: make_variant(name, base) for name in wanted}

    def run(name: str, i: int) -> None:
        s, _, cl = steps[name]
        x0 = pool[i % len(pool)]
        x0 = x0.contiguous(memory_format=torch.channels_last) if cl else x0.contiguous()
        s.step(x0, s.inputs(x0, i), i)

    warm = {}
    for name in wanted:
        t0 = time.perf_counter()
        for i in range(a.warmup):
            run(name, i)
        sync(device)
        warm[name] = time.perf_counter() - t0
        print(f"{name}: warm-up {a.warmup} steps in {warm[name]:.1f} s", file=sys.stderr)

    times: dict[str, list[float]] = {n: [] for n in wanted}
    i = a.warmup
    for _ in range(a.rounds):
        for name in wanted:
            for _ in range(a.steps):
                t0 = time.perf_counter()
                run(name, i)
                sync(device)
                times[name].append((time.perf_counter() - t0) * 1e3)
                i += 1
    mem = {n: None if a.no_memory else peak_bytes(lambda n=n: run(n, i), device) for n in wanted}
    method = cfg.method.name

    shape = f"{Path(a.config).stem} ({method}) B{tc.batch_size} {cfg.data.resolution}px"
    base_ips = None
    rows = []
    for name in wanted:
        ms = statistics.median(times[name])
        ips = tc.batch_size / (ms / 1e3)
        base_ips = base_ips or (ips if name == "eager-fp32" else None)
        prec = steps[name][1]
        tflops = flops / (ms / 1e3) / 1e12
        peak = known_peak(device, prec == "bf16")
        note = f"{tflops:.3f} TFLOP/s achieved"
        note += f", MFU {100 * tflops / peak:.1f}%" if peak else ""
        note += f"; warm-up {warm[name]:.0f} s; {len(times[name])} steps; data: {data_note}"
        if base_ips and name != "eager-fp32":
            note = f"{ips / base_ips:.2f}x eager-fp32; " + note
        rows.append(Row("step", name, "step", shape, prec, ms, "img/s", ips, None, mem[name], note))
    report(rows, device, a.out, "step")
    print(f"FLOPs/step (eager count): {flops:.4g}")
    ref = next((r for r in rows if r.provider == "eager-fp32"), None)
    for r in rows:
        if ref and r is not ref:
            others = ", ".join(
                f"{r.value / o.value:.2f}x {o.provider}" for o in rows if o is not r and o.value
            )
            print(f"{r.provider}: {r.value:.1f} img/s = {others}")


if __name__ == "__main__":
    main()
