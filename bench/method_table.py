"""One table for the whole family: arcdae, diffae, dgae, ddaepp and dmz at their quickstart
sizes, each trained for the same number of images on one dataset, evaluated with the same
suites, seeds side by side.

    make realdata                                   # Fashion-MNIST's files (Debian package)
    python bench/method_table.py --data fashion_mnist          # runs/method_table/..., resumable
    python bench/method_table.py --data synthetic              # the bundled faces

Per run: `python -m arcdae_fast.train` (train.max_steps steps of train.batch_size images at
32 px, train.seed = the seed; a run folder already there resumes from its checkpoint), with
the classify suite (or the probe, for faces) every --eval-every steps on --during-images
validation images (the learning curve), then `python -m arcdae_fast.eval` on the test split:
fashion_mnist: classify (converged linear and k-NN top-1, with the raw-pixel and random-init
baselines, --eval-images images per split), recon and steps; synthetic: probe, regress, tad
(converged probes), recon and steps. A finished run's eval.json is reused, so the command
picks up where it stopped. Writes bench/results/method_table_<data>.{json,md} and a plot of
the validation accuracy against training steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {  # method -> (preset, overrides): the quickstart size of each method
    "arcdae": ("quickstart.yaml", []),
    "diffae": ("quickstart.yaml", ["method.name=diffae"]),
    "dgae": ("dgae-quickstart.yaml", []),
    "ddaepp": ("ddaepp-quickstart.yaml", []),
    "dmz": ("dmz-quickstart.yaml", []),
}
SEEDS = {"arcdae": 3, "diffae": 3, "dgae": 2, "ddaepp": 2, "dmz": 2}
SUITES = {
    "fashion_mnist": ("classify", "recon", "steps"),
    "synthetic": ("probe", "regress", "tad", "recon", "steps"),
}
DURING = {"fashion_mnist": "classify", "synthetic": "probe"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def order(seed_counts: dict[str, int]) -> list[tuple[str, int]]:
    """Seed 0 of every method first, then seed 1, ...: an interrupted table covers all."""
    top = max(seed_counts.values())
    return [(m, s) for s in range(top) for m, n in seed_counts.items() if s < n]


def run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if r.returncode:
        sys.exit(f"error: {' '.join(cmd[:4])} ... failed (exit {r.returncode}); see {log}")


def params(preset: str, overrides: list[str]) -> int:
    from arcdae_fast import methods
    from arcdae_fast.config import load_config

    m = methods.build(load_config(preset, overrides))
    return sum(p.numel() for p in m.trainable().parameters())


def one(a, method: str, seed: int) -> dict:
    preset, extra = PRESETS[method]
    out = a.runs / name_of(a) / f"{method}-s{seed}"
    data = [f"data.dataset={a.data}", "data.resolution=32", f"train.seed={seed}"]
    if a.channels != 3:
        data.append(f"data.channels={a.channels}")
    if a.root:
        data.append(f"data.root={a.root}")
    if a.data == "synthetic":
        data.append("data.synthetic_count=2048")
    train_args = [
        *extra,
        *data,
        f"train.max_steps={a.steps}",
        f"train.batch_size={a.batch}",
        f"train.eval_every={a.eval_every}",
        f"train.ckpt_every={a.eval_every}",
        "train.sample_every=0",
        "train.step=eager",
        f"eval.during_training=[{DURING[a.data]}]",
        f"eval.during_training_images={a.during_images}",
        "eval.baselines=false",
    ]
    log = out.parent / f"{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = out / "table_eval.json"
    if result.is_file():
        return json.loads(result.read_text())
    py = sys.executable
    t0 = time.time()
    run(
        [
            py,
            "-m",
            "arcdae_fast.train",
            "--config",
            preset,
            "--out",
            str(out),
            "--quiet",
            *train_args,
        ],
        log,
    )
    t_train = time.time() - t0
    ev_args = [
        *extra,
        *data,
        f"eval.max_images={a.eval_images}",
        f"eval.recon_images={a.recon_images}",
        "eval.recon_steps=20",
        "eval.steps_grid=[1,2,5,10]",
        "eval.baselines=true",
    ]
    run(
        [
            py,
            "-m",
            "arcdae_fast.eval",
            "--run",
            str(out),
            "--suite",
            ",".join(SUITES[a.data]),
            "--out",
            str(out / "table_eval"),
            "--no-progress",
            "--quiet",
            *ev_args,
        ],
        log,
    )
    ev = json.loads((out / "table_eval" / "eval.json").read_text())
    curve = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        key = {"fashion_mnist": "eval_classify_top1", "synthetic": "eval_probe_ap"}[a.data]
        if key in rec:
            curve.append((rec["step"], rec[key]))
    rec = {
        "method": method,
        "seed": seed,
        "params": params(preset, extra),
        "images_seen": a.steps * a.batch,
        "train_seconds": round(t_train, 1),
        "suites": ev["suites"],
        "curve": curve,
    }
    result.write_text(json.dumps(rec))
    return rec


def name_of(a) -> str:
    """The table's name: the dataset, and _c1 for grey images as one channel."""
    return a.data + ("" if a.channels == 3 else f"_c{a.channels}")


def stat(xs: list[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{np.mean(xs):.3f} ± {np.std(xs, ddof=1):.3f}"


def rows_fashion(recs: list[dict]) -> list[str]:
    head = [
        "| method | params | seeds | linear top-1 | k-NN top-1 | pixels linear / k-NN | "
        "random-init linear / k-NN | recon MSE inverted / random | SSIM random | "
        "MSE 10 steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out = []
    for m in PRESETS:
        rs = [r for r in recs if r["method"] == m]
        if not rs:
            continue
        c = [r["suites"]["classify"] for r in rs]
        rc = [r["suites"]["recon"] for r in rs]
        st = [r["suites"]["steps"]["steps"]["10"] for r in rs]

        def both(who, c=c):
            return " / ".join(stat([x[who][k] for x in c]) for k in ("top1", "knn_top1"))

        recon = " / ".join(stat([x[s]["mse"] for x in rc]) for s in ("inverted", "random"))
        out.append(
            f"| {m} | {rs[0]['params'] / 1e6:.2f}M | {len(rs)} | "
            f"{both('code').replace(' / ', ' | ')} | {both('pixels')} | {both('random_init')} | "
            f"{recon} | "
            f"{stat([x['random']['ssim'] for x in rc])} | {stat([x['mse'] for x in st])} |"
        )
    return head + out


def rows_faces(recs: list[dict]) -> list[str]:
    head = [
        "| method | params | seeds | probe AP | regress r | TAD | ATTRS | recon MSE inverted / "
        "random | MSE 10 steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    out = []
    for m in PRESETS:
        rs = [r for r in recs if r["method"] == m]
        if not rs:
            continue
        s = [r["suites"] for r in rs]
        out.append(
            f"| {m} | {rs[0]['params'] / 1e6:.2f}M | {len(rs)} | "
            f"{stat([x['probe']['mean_ap'] for x in s])} | "
            f"{stat([x['regress']['mean_pearson_r'] for x in s])} | "
            f"{stat([x['tad']['tad'] for x in s])} | {stat([x['tad']['attrs'] for x in s])} | "
            f"{stat([x['recon']['inverted']['mse'] for x in s])} / "
            f"{stat([x['recon']['random']['mse'] for x in s])} | "
            f"{stat([x['steps']['steps']['10']['mse'] for x in s])} |"
        )
    return head + out


def plot(recs: list[dict], path: Path, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for i, m in enumerate(PRESETS):
        for r in (r for r in recs if r["method"] == m and r["curve"]):
            steps, acc = zip(*r["curve"])
            ax.plot(steps, acc, "o-", color=f"C{i}", ms=3, label=m if r["seed"] == 0 else None)
    ax.set_xlabel("training steps")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=tuple(SUITES), default="fashion_mnist")
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--during-images", type=int, default=1000)
    p.add_argument("--eval-images", type=int, default=5000, help="images per split (0: all)")
    p.add_argument("--methods", default=",".join(PRESETS))
    p.add_argument("--recon-images", type=int, default=64, help="images of recon and steps")
    p.add_argument("--seeds", type=int, default=0, help="at most this many seeds (0: the table's)")
    p.add_argument("--root", default=None, help="data.root (default: the layout's)")
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=3,
        help="data.channels: 1 trains on grey images as one channel (fashion_mnist)",
    )
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "method_table")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument(
        "--write-only", action="store_true", help="rewrite the tables from the finished runs"
    )
    a = p.parse_args(argv)
    a.argv = sys.argv[1:] if argv is None else argv
    chosen = {m: min(SEEDS[m], a.seeds or SEEDS[m]) for m in a.methods.split(",")}
    a.planned = len(order(chosen))
    recs = []
    if a.write_only:
        for method, seed in order(chosen):
            done = a.runs / name_of(a) / f"{method}-s{seed}" / "table_eval.json"
            if done.is_file():
                recs.append(json.loads(done.read_text()))
        write(a, recs)
        print(f"wrote {a.results}/method_table_{name_of(a)}.md ({len(recs)} runs)", flush=True)
        return
    for method, seed in order(chosen):
        print(f"{time.strftime('%H:%M:%S')} {method} seed {seed}", flush=True)
        recs.append(one(a, method, seed))
        write(a, recs)
    print(f"wrote {a.results}/method_table_{name_of(a)}.md", flush=True)


def write(a, recs: list[dict]) -> None:
    a.results.mkdir(parents=True, exist_ok=True)
    stem = a.results / f"method_table_{name_of(a)}"
    rows = rows_fashion(recs) if a.data == "fashion_mnist" else rows_faces(recs)
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(
            f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in text
        )
    except OSError:
        pass
    md = [
        f"# Method table on {a.data} ({time.strftime('%Y-%m-%d')})",
        "",
        f"{cpu_name()} ({os.cpu_count()} cores; {flags}); each run {a.steps} steps of "
        f"{a.batch} images at 32 px ({a.steps * a.batch} images), "
        f"{'one channel (data.channels=1), ' if a.channels == 1 else ''}"
        "eager fp32/bf16 step as the "
        f"preset sets it; evaluation on the test split with {a.eval_images or 'all'} images per "
        "split; mean ± sample std over seeds. Command: "
        f"`python bench/method_table.py {' '.join(x for x in a.argv if x != '--write-only')}`.",
        *(
            [
                "",
                f"**Partial**: {len(recs)} of the {a.planned} runs this command plans are done "
                "(the seeds column says which); the same command resumes the rest.",
            ]
            if len(recs) < a.planned
            else []
        ),
        "",
        *rows,
        "",
        f"![validation score against training steps](method_table_{name_of(a)}.png)",
    ]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    stem.with_suffix(".json").write_text(json.dumps(recs, indent=1))
    ylabel = {"fashion_mnist": "linear top-1 (valid)", "synthetic": "probe AP (valid)"}[a.data]
    plot(recs, stem.with_suffix(".png"), ylabel)


if __name__ == "__main__":
    main()
