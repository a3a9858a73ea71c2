"""Each method preset's compiled step on one device: the compiled step against the eager step
(fp32, TF32 off: every loss term and every parameter's gradient), then a few bf16 steps of
the compiled step and, on CUDA, of its CUDA-graph mode (compile_mode=reduce-overhead),
whose first step must agree with the default mode's. One JSON line per preset and check.

    python bench/gpu_steps.py --out steps.jsonl                      # CUDA: the quickstarts
    python bench/gpu_steps.py --device cpu --compile-backend eager   # Dynamo only (dry run)

`--compile-backend eager` traces the step with Dynamo (fullgraph, the thing that breaks
when a new op is not traceable) without Inductor's code generation, minutes faster on CPU.
Exit status 1 when any check fails. Run by bench/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import traceback

import torch
from step_agreement import PRESETS as ALL_PRESETS
from step_agreement import QUICKSTARTS

from arcdae_fast import methods
from arcdae_fast.config import load_config
from arcdae_fast.ema import frozen_copy
from arcdae_fast.session import apply_backend
from arcdae_fast.step import CompiledStep, EagerStep, build_optimizer

# preset name -> (config, overrides): every built-in method once, at its quickstart size
PRESETS = {name: ALL_PRESETS[name] for name in QUICKSTARTS}
LOSS_RTOL = 1e-3  # fp32 on CUDA: cuDNN / cuBLAS reduction orders differ between the graphs
GRAD_RTOL = 1e-2
BF16_RTOL = 5e-2  # reduce-overhead vs default, both bf16: same graph, replayed


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make(cfg, cls, model, **kw):
    ema = frozen_copy(model.trainable())
    opt, sched = build_optimizer(model, 1e-4, (0.9, 0.999), 0.0, 0)
    return cls(model, ema, opt, sched, grad_clip=1.0, ema_decay=0.9, **kw)


def fresh_model(cfg, device: torch.device):
    """The preset's method with its zero-initialised layers re-drawn (every path live)."""
    torch.manual_seed(0)
    m = methods.build(cfg)
    for p in m.parameters():
        if p.abs().max() == 0:
            p.data.normal_(std=0.05)
    return m.to(device)


def check_fp32(cfg, device, backend: str, x0: torch.Tensor) -> dict:
    """The compiled step against the eager step on the same weights and random inputs."""
    ref_model = fresh_model(cfg, device)
    fast_model = copy.deepcopy(ref_model)
    ref = make(cfg, EagerStep, ref_model, precision="fp32")
    fast = make(cfg, CompiledStep, fast_model, precision="fp32", compile_backend=backend)
    inputs = ref_model.draw_inputs(x0, torch.Generator(device).manual_seed(1))
    want = ref(x0, inputs, 0)
    t0 = time.perf_counter()
    got = fast(x0, inputs, 0)
    sync(device)
    compile_s = time.perf_counter() - t0
    terms = {k: rel_err(got[k], want[k]) for k in (*ref_model.terms(), "grad_norm")}
    named = dict(fast_model.named_parameters())
    grads = [
        (rel_err(named[n].grad, p.grad), n)
        for n, p in ref_model.named_parameters()
        if p.grad is not None and p.grad.norm() > 0
    ]
    worst_grad, worst_name = max(grads)
    ok = max(terms.values()) <= LOSS_RTOL and worst_grad <= GRAD_RTOL
    return {
        "check": "fast-vs-eager-fp32",
        "ok": ok,
        "term_rel_err": terms,
        "worst_grad_rel_err": worst_grad,
        "worst_grad_param": worst_name,
        "grads_checked": len(grads),
        "first_step_s": round(compile_s, 2),
        "tolerance": {"terms": LOSS_RTOL, "grads": GRAD_RTOL},
    }


def run_bf16(cfg, device, backend: str, mode: str, x0: torch.Tensor, steps: int) -> tuple:
    """`steps` bf16 steps of the compiled step in compile_mode `mode`: (first step's terms,
    median step ms after the first two)."""
    model = fresh_model(cfg, device)
    step = make(
        cfg, CompiledStep, model, precision="bf16", compile_mode=mode, compile_backend=backend
    )
    g = torch.Generator(device).manual_seed(1)
    first, times = None, []
    for i in range(steps):
        inputs = model.draw_inputs(x0, g)
        sync(device)
        t0 = time.perf_counter()
        out = step(x0, inputs, i)
        sync(device)
        times.append(time.perf_counter() - t0)
        if not all(bool(torch.isfinite(v)) for v in out.values()):
            raise FloatingPointError(f"non-finite terms at step {i}: {out}")
        first = first or {k: v.float().cpu() for k, v in out.items()}
    later = sorted(times[2:]) or sorted(times)
    return first, 1e3 * later[len(later) // 2]


def check_preset(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    config, overrides = PRESETS[name]
    sets = [f"train.device={device.type}", f"train.batch_size={args.batch}", *overrides]
    if args.resolution:
        sets.append(f"data.resolution={args.resolution}")
    cfg = load_config(config, sets)
    apply_backend(cfg, device)
    res = cfg.data.resolution
    x0 = torch.rand(args.batch, 3, res, res, generator=torch.Generator().manual_seed(0))
    x0 = (x0 * 2 - 1).to(device)
    base = {"preset": name, "config": config, "overrides": overrides, "device": str(device)}
    base |= {"batch": args.batch, "resolution": res, "compile_backend": args.compile_backend}
    rows = []

    def attempt(label: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            row = fn()
        except Exception as e:  # noqa: BLE001 - one broken preset must not hide the others
            row = {"check": label, "ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
            traceback.print_exc()
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(base | row)
        print(json.dumps(base | row), flush=True)

    attempt("fast-vs-eager-fp32", lambda: check_fp32(cfg, device, args.compile_backend, x0))
    if args.bf16_steps and name in args.bf16_presets.split(","):
        modes = ["default"] + (["reduce-overhead"] if device.type == "cuda" else [])
        firsts = {}

        def bf16(mode: str) -> dict:
            first, ms = run_bf16(cfg, device, args.compile_backend, mode, x0, args.bf16_steps)
            firsts[mode] = first
            row = {"check": f"bf16-{mode}", "ok": True, "steps": args.bf16_steps, "step_ms": ms}
            if mode != "default" and "default" in firsts:
                err = max(rel_err(first[k], firsts["default"][k]) for k in first)
                row |= {"rel_err_vs_default": err, "ok": err <= BF16_RTOL}
            return row

        for mode in modes:
            attempt(f"bf16-{mode}", lambda mode=mode: bf16(mode))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated subset")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--resolution", type=int, default=None, help="default: the preset's")
    p.add_argument("--bf16-steps", type=int, default=6, help="0: the fp32 check only")
    p.add_argument("--bf16-presets", default="arcdae", help="the presets also run in bf16")
    p.add_argument("--compile-backend", default="inductor", help="inductor | aot_eager | eager")
    p.add_argument("--out", default=None, help="JSON lines appended here")
    args = p.parse_args(argv)
    unknown = set(args.presets.split(",")) - set(PRESETS)
    if unknown:
        p.error(f"unknown presets {sorted(unknown)}; known: {list(PRESETS)}")
    device = torch.device(args.device)
    if device.type == "cuda":  # fp32 means fp32: the comparison would otherwise see TF32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rows = [r for name in args.presets.split(",") for r in check_preset(name, args, device)]
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    bad = [f"{r['preset']}:{r['check']}" for r in rows if not r["ok"]]
    print(f"{len(rows) - len(bad)}/{len(rows)} checks passed" + (f"; failed: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
