"""bench/gpu_check.sh's summary: the stage table, the step checks, and the measured numbers
against the GPU targets (README, Performance), as summary.md and summary.json in the output
folder. Exit status 1 when a stage failed or ran out of time, or a check failed.

    python bench/gpu_summary.py --stages STAGES.tsv --out DIR [--dry-run 1] [--seconds S]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, git_commit, versions  # noqa: E402

# the eager / library providers each benchmark compares the fast backends with
BASELINES = {"naive-eager", "naive-compiled", "reference-eager", "reference-compiled"}
BASELINES |= {"sdpa", "eager-gn-silu"}
# (bench, mode, shape contains, baseline, least speedup, roofline least, memory ratio most)
OP_TARGETS = [
    ("infonce", "fwd+bwd", "N=16384", "naive-eager", 2.0, None, 0.05),
    ("attn_pool", "fwd+bwd", "", "sdpa", 2.0, None, None),
    ("augment", "fwd", "", "reference-eager", 5.0, 0.6, None),
    ("adagn", "fwd+bwd", "", "reference-compiled", 1.3, 0.7, None),
]
STEP_TARGETS = [("eager-fp32", 3.0), ("eager-bf16-cl", 1.5)]
DECODE_TARGET = 3.0  # decoding at least 3x the images per second the compiled step consumes


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open())) if path.exists() else []


def num(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def op_targets(rows: list[dict]) -> list[dict]:
    out = []
    for bench, mode, shape, base, speed, roof, mem in OP_TARGETS:
        cand = [
            r for r in rows if r["bench"] == bench and r["mode"] == mode and shape in r["shape"]
        ]
        for shp in sorted({r["shape"] for r in cand}):
            here = [r for r in cand if r["shape"] == shp and num(r["median_ms"])]
            ref = next((r for r in here if r["provider"] == base), None)
            fast = [r for r in here if r["provider"] not in BASELINES]
            if ref is None or not fast:
                continue
            best = min(fast, key=lambda r: num(r["median_ms"]))
            got = {"speedup": num(ref["median_ms"]) / num(best["median_ms"])}
            want = {"speedup": speed}
            if roof is not None:
                got["roofline_frac"], want["roofline_frac"] = num(best["roofline_frac"]), roof
            if mem is not None:
                rb, bb = num(ref["peak_mem_bytes"]), num(best["peak_mem_bytes"])
                got["memory_ratio"] = bb / rb if rb and bb is not None else None
                want["memory_ratio"] = mem
            met = all(
                got[k] is not None and (got[k] <= w if k == "memory_ratio" else got[k] >= w)
                for k, w in want.items()
            )
            what = f"{bench} {mode} {shp} {best['dtype']}: {best['provider']} vs {base}"
            out.append({"target": what, "measured": got, "wanted": want, "met": met})
    return out


def step_targets(step_rows: list[dict], data_rows: list[dict]) -> list[dict]:
    ips = {r["provider"]: num(r["value"]) for r in step_rows if r["metric"] == "img/s"}
    out = []
    fast = ips.get("compiled")
    for base, want in STEP_TARGETS:
        if fast and ips.get(base):
            ratio = fast / ips[base]
            what = f"step {step_rows[0]['shape']}: compiled vs {base}"
            out.append(
                {
                    "target": what,
                    "measured": {"speedup": ratio},
                    "wanted": {"speedup": want},
                    "met": ratio >= want,
                }
            )
    decode = [num(r["value"]) for r in data_rows if r["metric"] == "img/s" and num(r["value"])]
    if fast and decode:
        ratio = max(decode) / fast
        what = "decode img/s (best loader) vs the compiled step's img/s"
        out.append(
            {
                "target": what,
                "measured": {"ratio": ratio},
                "wanted": {"ratio": DECODE_TARGET},
                "met": ratio >= DECODE_TARGET,
            }
        )
    return out


def fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", type=Path, required=True, help="name, status, seconds, note (TSV)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dry-run", default="0")
    p.add_argument("--seconds", type=int, default=None)
    a = p.parse_args(argv)
    stages = [
        dict(zip(("stage", "status", "seconds", "note"), ln.rstrip("\n").split("\t")))
        for ln in a.stages.read_text().splitlines()
        if ln.strip()
    ]
    steps_path = a.out / "steps.jsonl"
    rows = (
        [json.loads(ln) for ln in steps_path.read_text().splitlines() if ln.strip()]
        if steps_path.exists()
        else []
    )
    # steps.jsonl: gpu_steps.py's checks, step_agreement.py's variants, op_evidence.py's records
    steps = [r for r in rows if "check" in r]
    agreement = [r for r in rows if "variant" in r]
    ops, step_rows, data_rows = (read_csv(a.out / n) for n in ("ops.csv", "step.csv", "data.csv"))
    prof_path = a.out / "profile.json"
    prof = json.loads(prof_path.read_text()) if prof_path.exists() else None
    dev = torch.device("cuda" if torch.cuda.is_available() and a.dry_run != "1" else "cpu")
    env = {
        "device": device_name(dev),
        **versions(),
        "cuda": torch.version.cuda,
        "commit": git_commit(),
    }
    env |= {"dry_run": a.dry_run == "1", "seconds": a.seconds}
    targets = op_targets(ops) + step_targets(step_rows, data_rows)
    summary = {"env": env, "stages": stages, "steps": steps, "targets": targets}
    if prof:
        summary["profile"] = {
            k: prof.get(k)
            for k in (
                "config",
                "variant",
                "ms_per_step",
                "img_per_s",
                "achieved_tflops",
                "peak_tflops",
                "mfu",
            )
        }
        summary["profile"]["top_ops"] = (prof.get("top_ops") or [])[:10]
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")

    md = [f"# GPU check{' (dry run, CPU)' if env['dry_run'] else ''}", ""]
    md += [
        f"{env['device']}; torch {env['torch']}, CUDA {env['cuda']}, "
        f"Triton {env['triton']}; commit {env['commit']}; {a.seconds} s",
        "",
    ]
    md += ["| stage | status | s | note |", "| --- | --- | --- | --- |"]
    md += [f"| {s['stage']} | {s['status']} | {s['seconds']} | {s['note']} |" for s in stages]
    if steps:
        md += ["", "| preset | check | ok | measured |", "| --- | --- | --- | --- |"]
        for r in steps:
            keys = ("worst_grad_rel_err", "step_ms", "rel_err_vs_default", "error")
            m = {k: r[k] for k in keys if k in r}
            if "term_rel_err" in r:
                m["worst_term_rel_err"] = max(r["term_rel_err"].values())
            md.append(f"| {r['preset']} | {r['check']} | {r['ok']} | {fmt(m)} |")
    if targets:
        if env["dry_run"]:
            md += [
                "",
                "The targets are the GPU's; on CPU at tiny sizes they only show the script works.",
            ]
        md += ["", "| target | measured | wanted | met |", "| --- | --- | --- | --- |"]
        md += [
            f"| {t['target']} | {fmt(t['measured'])} | {fmt(t['wanted'])} | {t['met']} |"
            for t in targets
        ]
    if prof:
        s = summary["profile"]
        mfu = f"{100 * s['mfu']:.1f}%" if s.get("mfu") is not None else "n/a (no known peak)"
        md += [
            "",
            f"Profile ({s['config']}, {s['variant']}): {s['ms_per_step']:.1f} ms/step, MFU {mfu}",
        ]
    (a.out / "summary.md").write_text("\n".join(md) + "\n")
    bad = [s["stage"] for s in stages if s["status"] in ("failed", "timeout")]
    bad += [f"{r['preset']}:{r['check']}" for r in steps if not r["ok"]]
    bad += [f"{r['preset']}:{r['variant']}" for r in agreement if r.get("ok") is False]
    print("summary: " + ("every stage that ran passed" if not bad else f"failed: {bad}"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
