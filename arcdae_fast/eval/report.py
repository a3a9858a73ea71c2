"""What `python -m arcdae_fast.eval` writes into DIR/eval/<step>/: eval.json (every number,
the protocol settings, the data and checkpoint used), report.md (the tables) and its plots:
per-attribute AP bars (ap.png), TAD per attribute (tad.png), the reconstruction grid
(recon.png: originals, from the inverted x_T, from a random x_T) and quality against the
number of decoding steps (steps.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write
from ..errors import doing, make_dir
from ..viz import to_grid


def _bars(path: Path, labels: list[str], values: list[float], title: str, ylabel: str, line=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(labels) + 1), 3.2))
    ax.bar(range(len(labels)), values, color="#4472c4")
    if line is not None:
        ax.axhline(line, color="#c00000", lw=1, ls="--")
    ax.set_xticks(range(len(labels)), labels, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with doing("write the plot", path):
        fig.savefig(path, dpi=110)
    plt.close(fig)


def _steps_table(r: dict) -> list[str]:
    """The steps suite's table: one row per decoding step count."""
    prior = r["prior"]
    head = "| steps | MSE | SSIM | MSE to converged |" + (
        " prior: MSE to converged | prior: FID |" if prior else ""
    )
    md = [
        "",
        f"{r['images']} images, one random x_T each; converged = {r['converged_steps']} steps",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for n, v in r["steps"].items():
        row = f"| {n} | {_fmt(v['mse'])} | {_fmt(v['ssim'])} | {_fmt(v['mse_to_converged'])} |"
        if prior:
            row += f" {_fmt(v['prior_mse_to_converged'])} | {_fmt(v.get('prior_fid'))} |"
        md.append(row)
    if r.get("fid_note"):
        md += ["", r["fid_note"]]
    return md


def _steps_plot(path: Path, r: dict, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(n) for n in r["steps"]]
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, key, label in ((axes[0], "mse", "MSE to the image"), (axes[1], "ssim", "SSIM")):
        ax.plot(steps, [v[key] for v in r["steps"].values()], "o-", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("decoding steps")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with doing("write the plot", path):
        fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _fit(r: dict) -> str:
    """How a probe was fitted: the regularisation picked, or DiTi's best epoch."""
    if r.get("protocol") == "diti":
        checks = r["settings"]["epochs"]
        return (
            f"DiTi's protocol, {r['steps']} Adam steps, best of {checks} checks: {r['best_epoch']}"
        )
    picked = r.get("c_per_attribute") or r.get("alpha_per_target") or []
    kind = "C" if "c_per_attribute" in r else "alpha"
    span = f"{min(picked):g}..{max(picked):g}" if picked else "-"
    return f"converged; {kind} per target picked on validation: {span}"


def write(out: Path, result: dict[str, Any], recon_rows=None) -> list[Path]:
    """eval.json, report.md and the plots; returns the paths written."""
    make_dir(out, "evaluation folder")
    paths = [out / "eval.json"]
    atomic_write(paths[0], lambda f: f.write(json.dumps(result, indent=2).encode()))
    s = result["suites"]
    md = [
        f"# Evaluation of {result['run']}",
        "",
        f"- checkpoint: `{result['checkpoint']}` (step {result['step']}, method "
        f"{result['method']}, the EMA weights)",
        f"- data: {result['data']['dataset']} ({result['data']['root']}), split "
        f"{result['split']}, {result['data']['resolution']} px",
        f"- settings: {json.dumps(result['settings'])}",
        "",
    ]
    for name, r in s.items():
        md.append(f"## {name}")
        if "skipped" in r:
            md += ["", f"not run: {r['skipped']}", ""]
            continue
        if name == "probe":
            md += [
                "",
                f"mean AP **{_fmt(r['mean_ap'])}** ({_fit(r)}, validation "
                f"{_fmt(r['valid_mean_ap'])}, {r['train_samples']} training codes)",
                "",
                "| attribute | AP |",
                "|---|---|",
            ]
            md += [f"| {k} | {_fmt(v)} |" for k, v in r["per_attribute"].items()]
            keys = [k for k, v in r["per_attribute"].items() if v is not None]
            _bars(
                out / "ap.png",
                keys,
                [r["per_attribute"][k] for k in keys],
                f"attribute probe: mean AP {r['mean_ap']:.3f}",
                "AP",
            )
            md += ["", "![AP per attribute](ap.png)"]
            paths.append(out / "ap.png")
            grid = r.get("grid")
            if grid is not None:
                md += ["", "### Probe grid (layer x t)", ""]
                if "skipped" in grid:
                    md.append(f"not run: {grid['skipped']}")
                else:
                    md += ["| cell | mean AP | validation AP |", "|---|---|---|"]
                    md += [
                        f"| {k} | {_fmt(v['mean_ap'])} | {_fmt(v['valid_mean_ap'])} |"
                        for k, v in grid["cells"].items()
                    ]
                    b = grid["best"]
                    md += ["", f"best cell (by validation AP): {b['layer']} at t={b['t']}"]
        elif name == "regress":
            md += [
                "",
                f"mean Pearson r **{_fmt(r['mean_pearson_r'])}**, mean MSE "
                f"**{_fmt(r['mean_mse'])}** (standardised targets; {_fit(r)})",
                "",
                "| target | Pearson r | MSE |",
                "|---|---|---|",
            ]
            md += [
                f"| {k} | {_fmt(v['pearson_r'])} | {_fmt(v['mse'])} |"
                for k, v in r["per_target"].items()
            ]
        elif name == "tad":
            md += [
                "",
                f"TAD **{_fmt(r['tad'])}**, ATTRS **{r['attrs']}** (best AUROC >= "
                f"{r['threshold']}, shared information <= {r['mi_threshold']})",
                "",
                "| attribute | best AUROC | dim | gap | shared info | counted |",
                "|---|---|---|---|---|---|",
            ]
            per = r["per_attribute"]
            md += [
                f"| {k} | {_fmt(v['best_auroc'])} | {v['best_dim']} | {_fmt(v['gap'])} | "
                f"{_fmt(v['shared_information'])} | {'yes' if v['counted'] else 'no'} |"
                for k, v in per.items()
            ]
            _bars(
                out / "tad.png",
                list(per),
                [v["best_auroc"] for v in per.values()],
                f"TAD {r['tad']:.3f}, ATTRS {r['attrs']}: best AUROC per attribute",
                "best AUROC",
                line=r["threshold"],
            )
            md += ["", "![best AUROC per attribute](tad.png)"]
            paths.append(out / "tad.png")
        elif name == "transfer":
            md += [
                "",
                f"probe fitted on this data's train split; mean AP in domain "
                f"**{_fmt(r['in_domain_ap'])}**, on {r['target']} **{_fmt(r['transfer_ap'])}**",
                "",
                "| attribute | in domain | transfer |",
                "|---|---|---|",
            ]
            md += [
                f"| {k} | {_fmt(v['in_domain'])} | {_fmt(v['transfer'])} |"
                for k, v in r["per_attribute"].items()
            ]
        elif name == "steps":
            md += _steps_table(r)
            _steps_plot(out / "steps.png", r, result["method"])
            md += ["", "![quality against decoding steps](steps.png)"]
            paths.append(out / "steps.png")
        elif name == "recon":
            md += [
                "",
                f"{r['images']} images, {r['steps']} DDIM steps",
                "",
                "| x_T | MSE | PSNR | SSIM | LPIPS |",
                "|---|---|---|---|---|",
            ]
            for start in ("inverted", "random"):
                v = r[start]
                md.append(
                    f"| {start} | {_fmt(v['mse'])} | {_fmt(v['psnr'])} | "
                    f"{_fmt(v['ssim'])} | {_fmt(v['lpips'])} |"
                )
            if r.get("lpips_note"):
                md += ["", f"LPIPS not computed: {r['lpips_note']}"]
            if recon_rows is not None:
                with doing("write the reconstruction grid", out / "recon.png"):
                    to_grid(recon_rows).save(out / "recon.png")
                md += [
                    "",
                    "Rows: originals; from the inverted x_T; from a random x_T.",
                    "",
                    "![reconstructions](recon.png)",
                ]
                paths.append(out / "recon.png")
        elif name == "classify":
            md += [
                "",
                f"{r['classes']} classes; converged linear probe (C on the validation split) and "
                "weighted k-NN, on the codes and the baselines",
                "",
                "| features | dims | linear top-1 | k-NN top-1 | C | converged |",
                "|---|---|---|---|---|---|",
            ]
            md += [
                f"| {who} | {v['dims']} | {_fmt(v['top1'])} | {_fmt(v['knn_top1'])} | {v['c']:g} "
                f"| {'yes' if v['convergence']['converged'] else 'no'} |"
                for who, v in r.items()
                if isinstance(v, dict) and "top1" in v and "dims" in v
            ]
        elif name == "fid":
            md += [
                "",
                f"rFID from the inverted x_T **{_fmt(r['rfid_inverted'])}**, from a random "
                f"x_T **{_fmt(r['rfid_random'])}** ({r['note']})",
            ]
        else:  # a suite without a section here (a plug-in): its numbers as JSON
            md += ["", "```json", json.dumps(r, indent=2, default=str), "```"]
        md.append("")
    atomic_write(out / "report.md", lambda f: f.write("\n".join(md).encode()))
    paths.append(out / "report.md")
    return paths
