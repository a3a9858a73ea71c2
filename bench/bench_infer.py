"""Inference speed of a trained run: encode, and a 10-step DDIM decode, for the eager
networks, torch.compile'd ones, the AOTInductor package (arcdae_fast/export.py) and, on CUDA
with torch-tensorrt, the TensorRT engine; all in one run, side by side, as ratios to eager.

    python bench/bench_infer.py --run runs/quickstart [--batch 16] [--steps 10]
        [--variants eager,compiled,aoti,tensorrt] [--json bench/results/infer_cpu.json]

Every variant computes the same function (its largest difference to eager is reported); the
timing is common.time_ms's median after a warm-up call, compile / export time reported apart.
The decode runs diffusion.solvers.solve (DDIM) with the variant as its denoiser.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, git_commit, time_ms, versions  # noqa: E402

from arcdae_fast import export, session  # noqa: E402
from arcdae_fast.diffusion.solvers import solve  # noqa: E402


def variants(names, mods, tmp: Path, device: torch.device):
    """{name: ({"encoder": fn, "denoiser": fn}, seconds to build)}."""
    out = {}
    for name in names:
        t0 = time.perf_counter()
        if name == "eager":
            fns = {w: m for w, (m, _) in mods.items()}
        elif name == "compiled":
            fns = {w: torch.compile(m) for w, (m, _) in mods.items()}
        else:
            why = export.unavailable("aoti" if name == "aoti" else "tensorrt", device)
            if why:
                print(f"{name}: skipped ({why})", file=sys.stderr)
                continue
            fmt = "aoti" if name == "aoti" else "tensorrt"
            fns = {}
            for w, (m, inputs) in mods.items():
                ep = export.export_program(m, inputs, dynamic=False)
                path = export.write(fmt, ep, inputs, tmp / f"{w}{export.SUFFIX[fmt]}")
                fns[w] = export.load(fmt, path)
        with torch.no_grad():  # first calls: the compiles happen here
            for w, (_, inputs) in mods.items():
                fns[w](*inputs)
        out[name] = (fns, time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", default="eager,compiled,aoti,tensorrt")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    run = session.load_run(a.run, None, a.overrides)
    mods = export.modules(run, a.batch)
    (x,), (_, _, z) = mods["encoder"][1], mods["denoiser"][1]
    x_T = torch.randn_like(x)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        built = variants(a.variants.split(","), mods, Path(tmp), run.device)
        ref = {}
        for name, (fns, build_s) in built.items():
            enc, den = fns["encoder"], fns["denoiser"]

            def decode(den=den):
                return solve(
                    den,
                    z,
                    run.method.schedule,
                    x_T,
                    a.steps,
                    "ddim",
                    run.cfg.diffusion.parameterization,
                )

            with torch.no_grad():
                got = {"encode": enc(x), "decode": decode()}
                ms = {
                    "encode": time_ms(lambda enc=enc: enc(x), run.device),
                    "decode": time_ms(decode, run.device, min_time=1.0, max_reps=20),
                }
            ref = ref or got
            row = {"variant": name, "build_s": round(build_s, 1)}
            for k in ("encode", "decode"):
                row[f"{k}_ms"] = round(ms[k], 2)
                row[f"{k}_max_abs_diff"] = float((got[k] - ref[k]).abs().max())
            rows.append(row)
    eager = rows[0]
    print(
        f"{device_name(run.device)}; run {a.run} (step {run.step}); batch {a.batch}, "
        f"{a.steps}-step DDIM decode"
    )
    print(
        f"{'variant':<10} {'build s':>8} {'encode ms':>10} {'x eager':>8} {'decode ms':>10} "
        f"{'x eager':>8} {'max|diff|':>10}"
    )
    for r in rows:
        diff = max(r["encode_max_abs_diff"], r["decode_max_abs_diff"])
        print(
            f"{r['variant']:<10} {r['build_s']:>8} {r['encode_ms']:>10} "
            f"{eager['encode_ms'] / r['encode_ms']:>8.2f} {r['decode_ms']:>10} "
            f"{eager['decode_ms'] / r['decode_ms']:>8.2f} {diff:>10.1e}"
        )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(
            json.dumps(
                {
                    "device": device_name(run.device),
                    "commit": git_commit(),
                    "versions": versions(),
                    "run": str(a.run),
                    "batch": a.batch,
                    "steps": a.steps,
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
