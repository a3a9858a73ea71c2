"""Step agreement: does every step variant train the same model as the eager fp32 step?

For each method preset and each step variant the device offers, train N steps from the same
initial weights on the same batches (the bundled synthetic faces, drawn in memory) with the
same random inputs per step, and report per variant:
- `loss_dev`: the loss curve's largest relative deviation from the eager fp32 run's;
- `weight_dist`: the final trained weights' relative distance to the eager fp32 run's;
- `nonfinite`: steps whose loss was NaN/inf (the run stops there);
- `img_per_s`: median step time after the first two steps (compiled variants: after the
  compile), as images per second.

Variants: `eager-fp32` (the ground truth), `eager-bf16`, `compiled-fp32`, `compiled-bf16`
(torch.compile with Inductor), and on CUDA `compiled-bf16-graphs` (CUDA graphs).

Tolerances (training is chaotic: a rounding difference grows over the steps, so a fixed
epsilon would be wrong for any N):
- fp32 variants are judged against float32 reordering itself: a second eager fp32 run whose
  initial weights are perturbed by float32 rounding noise (relative 2**-24 per entry,
  `eager-fp32-rounded`) measures how far such a difference grows in N steps; a fp32 variant
  passes when both its deviations are <= FP32_FACTOR x that run's + FP32_FLOOR.
- bf16 variants are judged against the eager bf16 step's own deviation from fp32: they pass
  when both deviations are <= BF16_FACTOR x eager-bf16's + BF16_FLOOR.
A variant with any non-finite step fails.

Seeds (--seeds, default 3): every variant trains once per draw of the data and random inputs,
each against eager fp32 on the same draw, and its deviations are the median over the draws.
One draw is not enough where training is chaotic in bf16: DDAE++'s quickstart (InfoNCE at
temperature 0.1) put its eager bf16 step 1.3e-2, 5.4e-2 and 2.3e-1 from fp32 on three draws,
so a single draw's tolerance failed a compiled step that, over draws, was no worse
(docs/measurements.md).

Presets with dropout (the real-size ones) compile with Inductor's `fallback_random`, so that
the compiled step draws its dropout masks from the same generator, in the same order, as the
eager step (Inductor's own random numbers would differ, and the runs with them). Their img/s
are then those of that setting.

    python bench/step_agreement.py                                   # 5 quickstarts, 50 steps
    python bench/step_agreement.py --presets arcdae,diffae --steps 10 --batch 8
    python bench/step_agreement.py --presets ffhq64 --resolution 32 --batch 4 --record
    python bench/step_agreement.py --presets dgae-b --resolution 32 --batch 4 \
        --set train.warmup_steps=0                 # its 10k-step warm-up: no lr in 50 steps

--record writes the verdicts into arcdae_fast/evidence.json for this device class, where
`train.step=auto` reads them (arcdae_fast/evidence.py). Results: one JSON line per preset
and variant appended to --out (default bench/results/step_agreement_<device class>.jsonl),
and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_name, git_commit, versions  # noqa: E402

from arcdae_fast import evidence, methods  # noqa: E402
from arcdae_fast.config import load_config  # noqa: E402
from arcdae_fast.data.synthetic import _sample, draw_face  # noqa: E402
from arcdae_fast.ema import frozen_copy  # noqa: E402
from arcdae_fast.session import apply_backend  # noqa: E402
from arcdae_fast.step import CompiledStep, EagerStep, NonFiniteLoss, optimizer_for  # noqa: E402

# preset -> (config, overrides): every method at its quickstart size, and the real-size
# presets (run them with --resolution / --batch that fit the machine)
PRESETS = {
    "arcdae": ("quickstart", []),
    "diffae": ("quickstart", ["method.name=diffae"]),
    "dgae": ("dgae-quickstart", []),
    "ddaepp": ("ddaepp-quickstart", []),
    "dmz": ("dmz-quickstart", []),
    "ffhq64": ("ffhq64", []),
    "ffhq64-diffae": ("ffhq64", ["method.name=diffae"]),
    # LPIPS's VGG-16 weights are a download: a random VGG is the same computation
    "dgae-b": ("dgae-b", ["method.lpips_weights=random"]),
    "ddaepp-full": ("ddaepp", []),
    "dmz-full": ("dmz", []),
}
QUICKSTARTS = ("arcdae", "diffae", "dgae", "ddaepp", "dmz")
FP32_FACTOR, FP32_FLOOR = 10.0, 1e-5
BF16_FACTOR, BF16_FLOOR = 2.0, 1e-3
SEED_STRIDE = 100_003  # a seed's random inputs: steps k + SEED_STRIDE * seed
ROUNDING = 2.0**-24  # float32's unit roundoff: the perturbation of eager-fp32-rounded


def faces(n: int, res: int, seed: int = 0) -> torch.Tensor:
    """n bundled synthetic faces at res px in [-1, 1], drawn in memory."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, f, style = _sample(rng)
        img = np.asarray(draw_face(a, f, style, res), dtype=np.float32) / 127.5 - 1
        out.append(torch.from_numpy(img).permute(2, 0, 1))
    return torch.stack(out)


def variants(device: torch.device) -> list[tuple[str, str, str, str]]:
    """(name, step kind, precision, compile mode) the device offers."""
    out = [
        ("eager-fp32", "eager", "fp32", ""),
        ("eager-fp32-rounded", "eager", "fp32", ""),
        ("eager-bf16", "eager", "bf16", ""),
        ("compiled-fp32", "compiled", "fp32", "default"),
        ("compiled-bf16", "compiled", "bf16", "default"),
    ]
    if device.type == "cuda":
        out.append(("compiled-bf16-graphs", "compiled", "bf16", "reduce-overhead"))
    return out


def has_dropout(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in module.modules())


def train(cfg, device, variant, batches, steps: int, backend: str, seed: int = 0) -> dict:
    """One run of `steps` steps; `seed` draws the random inputs and dropout (seed 0: the
    single-seed harness's own numbers)."""
    name, kind, precision, mode = variant
    if kind == "compiled" and seed == 0:  # a fresh Dynamo cache: the presets before would
        torch._dynamo.reset()  # count against Forward.forward's recompile limit (8)
    torch.manual_seed(0)
    method = methods.build(cfg).to(device)
    # dropout: Inductor draws its own random numbers, not eager's, so a compiled step would
    # drop other units than the eager step and diverge for that reason alone; with
    # fallback_random it draws from ATen's generator in the graph's order, the same masks
    torch._inductor.config.fallback_random = has_dropout(method)
    if name.endswith("-rounded"):  # float32 rounding noise on every initial weight
        g = torch.Generator(device).manual_seed(123 + seed)
        with torch.no_grad():
            for p in method.parameters():
                noise = torch.randn(p.shape, generator=g, device=device, dtype=p.dtype)
                p.mul_(1 + ROUNDING * noise)
    ema = frozen_copy(method.trainable())
    opt, sched = optimizer_for(method, cfg.train)
    kw = dict(grad_clip=cfg.train.grad_clip, ema_decay=cfg.train.ema_decay, precision=precision)
    if kind == "compiled":
        step = CompiledStep(
            method, ema, opt, sched, compile_mode=mode, compile_backend=backend, **kw
        )
    else:
        step = EagerStep(method, ema, opt, sched, **kw)
    losses, times, nonfinite = [], [], 0
    for k in range(steps):
        x0 = batches[k % len(batches)].to(device)
        draw = k + SEED_STRIDE * seed
        torch.manual_seed(1000 + draw)  # dropout
        inputs = method.draw_inputs(x0, torch.Generator(device).manual_seed(draw))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        try:
            out = step(x0, inputs, k)
        except NonFiniteLoss:
            nonfinite = steps - k  # the run stops: the rest never happen
            break
        loss = float(out["loss"])  # a host sync
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    weights = torch.cat(
        [p.detach().double().flatten().cpu() for p in method.trainable().parameters()]
    )
    later = times[2:] or times
    ms = statistics.median(later) if later else math.nan
    return {
        "losses": losses,
        "weights": weights,
        "nonfinite": nonfinite,
        "img_per_s": x0.shape[0] / ms if later else math.nan,
        "fallback_random": torch._inductor.config.fallback_random,
        "first_step_s": times[0] if times else math.nan,
    }


def deviations(run: dict, truth: dict) -> tuple[float, float]:
    n = min(len(run["losses"]), len(truth["losses"]))
    dev = max(
        (abs(a - b) / max(abs(b), 1e-12) for a, b in zip(run["losses"][:n], truth["losses"][:n])),
        default=math.inf,
    )
    w, t = run["weights"], truth["weights"]
    return dev, ((w - t).norm() / t.norm()).item()


def judge(rows: dict[str, dict]) -> None:
    """Adds `tolerance` and `ok` to each variant's row (see the module docstring)."""
    rounded, bf16 = rows["eager-fp32-rounded"], rows["eager-bf16"]
    for name, r in rows.items():
        if name.startswith("eager"):  # the references: finite is all they must be
            r["ok"] = r["nonfinite"] == 0
            continue
        if name.endswith("fp32"):
            base, factor, floor, against = rounded, FP32_FACTOR, FP32_FLOOR, "eager-fp32-rounded"
        else:
            base, factor, floor, against = bf16, BF16_FACTOR, BF16_FLOOR, "eager-bf16"
        tol_loss = factor * base["loss_dev"] + floor
        tol_w = factor * base["weight_dist"] + floor
        r["tolerance"] = {"loss_dev": tol_loss, "weight_dist": tol_w, "against": against}
        r["ok"] = r["nonfinite"] == 0 and r["loss_dev"] <= tol_loss and r["weight_dist"] <= tol_w


def preset_config(
    preset: str,
    device: torch.device,
    batch: int,
    resolution: int | None,
    extra: tuple[str, ...] = (),
):
    config, overrides = PRESETS[preset]
    sets = [f"train.device={device.type}", f"train.batch_size={batch}", *overrides, *extra]
    if resolution:
        sets.append(f"data.resolution={resolution}")
    return load_config(config, sets)


def agree(
    cfg,
    device: torch.device,
    steps: int,
    backend: str = "inductor",
    only: tuple[str, ...] = (),
    seeds: int = 1,
) -> dict[str, dict]:
    """Every variant (or the compiled ones in `only`, with the eager runs they are judged
    against) of one config, over `seeds` draws of the data and random inputs: {variant: row},
    the deviations the median over the seeds (each seed against eager fp32 on that seed)."""
    preset = cfg.method.name
    apply_backend(cfg, device)
    res, batch = cfg.data.resolution, cfg.train.batch_size
    batches = [list(faces(batch * min(steps, 8), res, seed=s).split(batch)) for s in range(seeds)]
    truth, rows = {}, {}  # truth: eager fp32's run per seed
    for v in variants(device):
        if (
            only
            and v[0] not in only
            and v[0] not in ("eager-fp32", "eager-fp32-rounded", "eager-bf16")
        ):
            continue
        t0, per_seed = time.perf_counter(), []
        try:
            for s in range(seeds):
                r = train(cfg, device, v, batches[s], steps, backend, seed=s)
                if v[0] == "eager-fp32":
                    truth[s] = r
                    per_seed.append((r, (0, 0)))
                else:  # only eager fp32's weights are kept: a real-size run's are 0.6 GB
                    per_seed.append((r, deviations(r, truth[s])))
                    del r["weights"]
        except Exception as e:  # noqa: BLE001 - one broken variant must not hide the others
            traceback.print_exc()
            rows[v[0]] = {"error": f"{type(e).__name__}: {e}"[:1000], "ok": False}
            continue
        first = per_seed[0][0]
        rows[v[0]] = {
            "loss_dev": statistics.median(d[0] for _, d in per_seed),
            "weight_dist": statistics.median(d[1] for _, d in per_seed),
            "nonfinite": sum(r["nonfinite"] for r, _ in per_seed),
            "img_per_s": statistics.median(r["img_per_s"] for r, _ in per_seed),
            "fallback_random": first["fallback_random"],
            "first_step_s": first["first_step_s"],
            "first_loss": first["losses"][0] if first["losses"] else None,
            "last_loss": first["losses"][-1] if first["losses"] else None,
            "seconds": time.perf_counter() - t0,
        }
        if seeds > 1:
            rows[v[0]]["per_seed"] = [list(d) for _, d in per_seed]
        print(f"{preset} {v[0]}: {json.dumps(rows[v[0]])}", file=sys.stderr, flush=True)
    if all(k in rows and "error" not in rows[k] for k in ("eager-fp32-rounded", "eager-bf16")):
        judge({k: r for k, r in rows.items() if "error" not in r})
    eager = rows.get("eager-fp32", {}).get("img_per_s")
    eager16 = rows.get("eager-bf16", {}).get("img_per_s")
    for name, r in rows.items():
        ref = eager16 if "bf16" in name else eager
        if "img_per_s" in r and ref:
            r["speedup_vs_eager"] = r["img_per_s"] / ref  # same precision
    return rows


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| preset | variant | loss dev | weight dist | tolerance (loss / weights) | non-finite "
        "| img/s | vs eager, same precision | ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset, rows in results.items():
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"| {preset} | {name} | error: {r['error'][:80]} | | | | | | no |")
                continue
            tol = r.get("tolerance")
            tol_s = f"{tol['loss_dev']:.1e} / {tol['weight_dist']:.1e}" if tol else ""
            lines.append(
                f"| {preset} | {name} | {r['loss_dev']:.1e} | {r['weight_dist']:.1e} | {tol_s} "
                f"| {r['nonfinite']} | {r['img_per_s']:.1f} | {r.get('speedup_vs_eager', 1):.2f}x "
                f"| {'yes' if r.get('ok') else 'NO'} |"
            )
    return "\n".join(lines)


def record_from(path: Path) -> int:
    """--record from a results file (e.g. the GPU check's steps.jsonl, brought back from the
    device): the newest run's rows per preset go into arcdae_fast/evidence.json."""
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "variant" in r]
    if not rows:
        print(f"{path}: no step-agreement rows", file=sys.stderr)
        return 1
    by_class: dict[str, dict] = {}
    for r in rows:  # a run's first row is its eager fp32 one: a newer run starts afresh
        presets = by_class.setdefault(r["device_class"], {})
        if r["variant"] == "eager-fp32" or r["preset"] not in presets:
            presets[r["preset"]] = {"method": r["method"], "rows": {}, "env": r}
        presets[r["preset"]]["rows"][r["variant"]] = r
    for dclass, results in by_class.items():
        by_date = sorted(results.items(), key=lambda kv: kv[1]["env"]["date"])
        for preset, item in by_date:  # each with its own run's date and steps; newest last
            evidence.record_steps(dclass, {preset: item}, item["env"])
        print(f"recorded {len(results)} preset(s) for {dclass} in {evidence.PATH}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--presets", default=",".join(QUICKSTARTS), help=f"of {','.join(PRESETS)}")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="draws of data and random inputs per variant; deviations are their median",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--resolution", type=int, default=None, help="default: the preset's")
    p.add_argument("--variants", default="", help="compiled variants to run (default: all)")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every preset (repeatable), e.g. train.warmup_steps=0 for a "
        "preset whose warm-up would keep its weights still over N steps",
    )
    p.add_argument("--out", default=None, help="JSON lines appended here")
    p.add_argument("--record", action="store_true", help="write arcdae_fast/evidence.json")
    p.add_argument("--record-from", default=None, help="record the rows of a results file")
    a = p.parse_args(argv)
    if a.record_from:
        return record_from(Path(a.record_from))
    names = [s for s in a.presets.split(",") if s]
    bad = [s for s in names if s not in PRESETS]
    if bad:
        p.error(f"unknown presets {bad}; known: {list(PRESETS)}")
    device = torch.device(a.device)
    if device.type == "cuda":  # fp32 means fp32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dclass = evidence.device_class(device)
    only = tuple(v for v in a.variants.split(",") if v)
    results = {}
    for n in names:
        method = load_config(*PRESETS[n]).method.name
        cfg = preset_config(n, device, a.batch, a.resolution, tuple(a.set))
        rows = agree(cfg, device, a.steps, a.compile_backend, only, a.seeds)
        results[n] = {"method": method, "rows": rows}
    env = {
        "device": device_name(device),
        "device_class": dclass,
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "steps": a.steps,
        "seeds": a.seeds,
        "batch": a.batch,
        "resolution": a.resolution,
        "overrides": a.set,
        "compile_backend": a.compile_backend,
        **versions(),
    }
    out = Path(a.out) if a.out else RESULTS / f"step_agreement_{dclass}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        for preset, item in results.items():
            for name, r in item["rows"].items():
                row = {**env, "preset": preset, "method": item["method"], "variant": name}
                row |= {"check": f"agreement-{name}", **r}  # "check": gpu_summary's table
                f.write(json.dumps(row) + "\n")
    print(
        f"device: {env['device']} ({dclass}); {a.steps} steps, batch {a.batch}, {a.seeds} seeds\n"
    )
    print(table({p: item["rows"] for p, item in results.items()}))
    if a.record:
        evidence.record_steps(dclass, results, env)
        print(f"\nrecorded in {evidence.PATH}")
    failed = [
        f"{p}:{v}"
        for p, item in results.items()
        for v, r in item["rows"].items()
        if not r.get("ok")
    ]
    print(f"\n{'all variants agree' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
