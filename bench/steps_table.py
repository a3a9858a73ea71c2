"""Side by side: the `steps` suite of several evaluated runs (e.g. dmz and diffae at equal
training steps) as one markdown table and one plot.

    python -m arcdae_fast.eval --run runs/dmz-quickstart --suite steps
    python -m arcdae_fast.eval --run runs/diffae-quickstart --suite steps
    python bench/steps_table.py runs/dmz-quickstart runs/diffae-quickstart --plot steps.png

Each run's newest RUN/eval/<step>/eval.json with a steps suite is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def newest_steps(run: Path) -> dict:
    for path in sorted((run / "eval").glob("*/eval.json"), reverse=True):
        r = json.loads(path.read_text())
        if "steps" in r["suites"] and "skipped" not in r["suites"]["steps"]:
            return r
    sys.exit(f"error: {run} has no evaluation with the steps suite (eval --suite steps)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--plot", type=Path, default=None)
    a = p.parse_args(argv)
    results = [(run, newest_steps(run)) for run in a.runs]
    print(
        "| run (method, step) | decoding steps | MSE | SSIM | MSE to converged "
        "| prior: MSE to converged |"
    )
    print("|---|---|---|---|---|---|")
    for run, r in results:
        for n, v in r["suites"]["steps"]["steps"].items():
            prior = v.get("prior_mse_to_converged")
            print(
                f"| {run.name} ({r['method']}, {r['step']}) | {n} | {v['mse']:.5f} | "
                f"{v['ssim']:.4f} | {v['mse_to_converged']:.5f} | "
                f"{'n/a' if prior is None else f'{prior:.5f}'} |"
            )
    if a.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(7.5, 3))
        for _, r in results:
            rows = r["suites"]["steps"]["steps"]
            steps = [int(n) for n in rows]
            for ax, key in zip(axes, ("mse", "ssim")):
                ax.plot(steps, [v[key] for v in rows.values()], "o-", label=r["method"])
                ax.set_xscale("log")
                ax.set_xlabel("DDIM steps")
                ax.set_title({"mse": "MSE to the image", "ssim": "SSIM"}[key], fontsize=9)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"wrote {a.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
