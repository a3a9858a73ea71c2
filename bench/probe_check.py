"""The engine's default probes against an independent probe on the same EMA codes.

    python bench/probe_check.py --run runs/quickstart

The independent side reads the CelebA-layout folder itself (PIL, the partition and attribute
files parsed here), encodes with `arcdae_fast.api` (the run's EMA encoder: the thing being
measured), and fits scikit-learn's LogisticRegression per attribute with C picked on the
validation split by AP, and ordinary least squares (with an intercept) for the continuous
factors. The engine's side is `python -m arcdae_fast.eval --suite probe,regress`. Prints both
and the differences; exit 1 when the AP or Pearson r differ by more than --tol (0.02).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score


def table(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    lines = path.read_text().split("\n")
    names = lines[1].split()
    rows = {}
    for line in lines[2:]:
        parts = line.split()
        if parts:
            rows[parts[0]] = np.array([float(v) for v in parts[1:]])
    return names, rows


def independent(run: Path, root: Path, resolution: int) -> tuple[float, float]:
    from arcdae_fast import api

    model = api.load(run)
    part = dict(
        line.split()
        for line in (root / "list_eval_partition.txt").read_text().split("\n")
        if line.strip()
    )
    _, attrs = table(root / "list_attr_celeba.txt")
    _, factors = table(root / "list_factors.txt")
    splits = {s: sorted(f for f, p in part.items() if p == s) for s in "012"}
    z, a, f = {}, {}, {}
    for s, files in splits.items():
        codes = []
        for i in range(0, len(files), 64):
            imgs = []
            for name in files[i : i + 64]:
                with Image.open(root / "img_align_celeba" / name) as im:
                    im = im.convert("RGB").resize((resolution, resolution), Image.BICUBIC)
                    imgs.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
            x = torch.stack(imgs).float() / 127.5 - 1
            with torch.no_grad():
                codes.append(model.encode(x).float().reshape(len(x), -1).cpu().numpy())
        z[s] = np.concatenate(codes)
        a[s] = np.stack([attrs[n] for n in files]) > 0
        f[s] = np.stack([factors[n] for n in files])
    mu, sd = z["0"].mean(0), z["0"].std(0) + 1e-8
    x = {s: (v - mu) / sd for s, v in z.items()}
    aps = []
    for j in range(a["0"].shape[1]):
        if not a["2"][:, j].any() or len(np.unique(a["0"][:, j])) < 2:
            continue
        best = None
        for c in np.logspace(-4, 2, 7):
            m = LogisticRegression(C=c, max_iter=5000).fit(x["0"], a["0"][:, j])
            v = average_precision_score(a["1"][:, j], m.decision_function(x["1"]))
            if best is None or v > best[0]:
                best = (v, m)
        aps.append(average_precision_score(a["2"][:, j], best[1].decision_function(x["2"])))
    design = np.c_[x["0"], np.ones(len(x["0"]))]
    w = np.linalg.lstsq(design, f["0"], rcond=None)[0]
    pred = np.c_[x["2"], np.ones(len(x["2"]))] @ w
    rs = [pearsonr(f["2"][:, k], pred[:, k]).statistic for k in range(f["2"].shape[1])]
    return float(np.mean(aps)), float(np.mean(rs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--tol", type=float, default=0.02)
    a = p.parse_args(argv)
    out = a.run / "eval" / "probe_check"
    cmd = [
        sys.executable,
        "-m",
        "arcdae_fast.eval",
        "--run",
        str(a.run),
        "--suite",
        "probe,regress",
    ]
    subprocess.run([*cmd, "--out", str(out), "--no-progress", "--quiet"], check=True)
    r = json.loads((out / "eval.json").read_text())
    data = r["data"]
    root = Path(data["root"] or f"data/synthetic_faces_{64}")
    ap, rr = independent(a.run, root, data["resolution"])
    engine_ap = r["suites"]["probe"]["mean_ap"]
    engine_r = r["suites"]["regress"]["mean_pearson_r"]
    print(f"mean AP: engine {engine_ap:.4f}, independent {ap:.4f}, diff {engine_ap - ap:+.4f}")
    print(f"mean r:  engine {engine_r:.4f}, independent {rr:.4f}, diff {engine_r - rr:+.4f}")
    return int(abs(engine_ap - ap) > a.tol or abs(engine_r - rr) > a.tol)


if __name__ == "__main__":
    sys.exit(main())
