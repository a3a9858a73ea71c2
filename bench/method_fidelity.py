"""Does ArcDAE's objective give a better representation than DiffAE's on the same network and
budget? Trains both methods on the bundled faces (the quickstart preset's network and data,
`--steps` steps, each seed), evaluates every run with `python -m arcdae_fast.eval` (probe,
regress, tad, recon) and prints the table of means and spreads over seeds.

    python bench/method_fidelity.py [--out runs/fidelity] [--steps 1500] [--seeds 0,1]
        [--threads 1] [--skip-train] [--recon-steps 100]

Results: bench/results/method_fidelity_cpu.json (every run's eval.json numbers) and the
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

METHODS = ("arcdae", "diffae")
METRICS = (  # (label, suite, path in eval.json's suite)
    ("probe AP", "probe", ("mean_ap",)),
    ("Pearson r", "regress", ("mean_pearson_r",)),
    ("regression MSE", "regress", ("mean_mse",)),
    ("TAD", "tad", ("tad",)),
    ("ATTRS", "tad", ("attrs",)),
    (
        "TAD's best single-dim AUROC (mean over attributes)",
        "tad",
        ("per_attribute", "*", "best_auroc"),
    ),
    ("recon MSE (inverted x_T)", "recon", ("inverted", "mse")),
    ("recon SSIM (inverted x_T)", "recon", ("inverted", "ssim")),
    ("recon MSE (random x_T)", "recon", ("random", "mse")),
    ("recon SSIM (random x_T)", "recon", ("random", "ssim")),
)


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/fidelity"))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--threads", type=int, default=0, help="train.num_threads (0: torch's)")
    p.add_argument(
        "--skip-train",
        action="store_true",
        help="evaluate existing runs only (reusing their evaluations at --steps)",
    )
    p.add_argument("--recon-steps", type=int, default=100)
    p.add_argument("--json", type=Path, default=Path("bench/results/method_fidelity_cpu.json"))
    a = p.parse_args(argv)
    py, seeds = sys.executable, [int(s) for s in a.seeds.split(",")]
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in seeds:
        for method in METHODS:
            out = a.out / f"{method}_s{seed}"
            out.parent.mkdir(parents=True, exist_ok=True)
            if not a.skip_train:
                sets = [f"method.name={method}", f"train.seed={seed}"]
                sets += [f"train.max_steps={a.steps}", "train.ckpt_every=500"]
                sets += [f"train.sample_every={a.steps}", f"train.num_threads={a.threads}"]
                train = [py, "-m", "arcdae_fast.train", "--config", "quickstart.yaml"]
                run([*train, "--out", str(out), "--no-progress", *sets], out.with_suffix(".log"))
            done = out / "eval" / f"{a.steps:08d}" / "eval.json"
            if not (a.skip_train and done.exists()):  # --skip-train reuses finished evals
                ev = [py, "-m", "arcdae_fast.eval", "--run", str(out), "--no-progress"]
                ev += ["--suite", "probe,regress,tad,recon", f"eval.recon_steps={a.recon_steps}"]
                run(ev, out.with_suffix(".eval.log"))
            r = json.loads(done.read_text())
            results[method].append({"seed": seed, "step": r["step"], "suites": r["suites"]})

    def value(rec: dict, suite: str, path: tuple[str, ...]) -> float:
        v = rec["suites"][suite]
        for i, k in enumerate(path):
            if k == "*":  # the mean over a dict's entries of the rest of the path
                return statistics.mean(
                    value({"suites": {"x": e}}, "x", path[i + 1 :]) for e in v.values()
                )
            v = v[k]
        return float(v)

    rows = [
        "| metric | "
        + " | ".join(f"{m} (mean +- sd over {len(seeds)} seeds)" for m in METHODS)
        + " |"
    ]
    rows.append("|---|" + "---|" * len(METHODS))
    table = {}
    for label, suite, path in METRICS:
        cells = []
        for m in METHODS:
            vals = [value(r, suite, path) for r in results[m]]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            table.setdefault(label, {})[m] = {
                "values": vals,
                "mean": statistics.mean(vals),
                "sd": sd,
            }
            cells.append(f"{statistics.mean(vals):.4f} +- {sd:.4f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(
        json.dumps({"steps": a.steps, "seeds": seeds, "table": table, "runs": results}, indent=2)
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
