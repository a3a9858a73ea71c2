"""What `python -m arcdae_fast.eval` writes into DIR/eval/<step>/: eval.json (every number,
the protocol settings, the data and checkpoint used) and report.md with its plots. Each
suite writes its own section (its registered `report`, in its file under eval/suites/: the
probe's AP bars ap.png, tad.png, recon.png, steps.png); a suite without one shows its
numbers as JSON. The helpers here (`bars`, `fmt`, `fit`, `Page`) are what sections share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write
from ..errors import doing, make_dir
from . import registry


def bars(path: Path, labels: list[str], values: list[float], title: str, ylabel: str, line=None):
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


@dataclass
class Page:
    """What a suite's section may use besides its result: the folder its plots go to (each
    written path appended to `paths`), the method's name, the reconstruction grid's rows."""

    out: Path
    method: str
    recon_rows: Any = None
    paths: list[Path] = field(default_factory=list)


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def fit(r: dict) -> str:
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
    page = Page(out, result["method"], recon_rows)
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
    for name, r in result["suites"].items():
        md.append(f"## {name}")
        suite = registry.SUITES.get(name)
        if "skipped" in r:
            md += ["", f"not run: {r['skipped']}"]
        elif suite is not None and suite.report is not None:
            md += suite.report(r, page)
        else:  # a suite without a section of its own (a plug-in): its numbers as JSON
            md += ["", "```json", json.dumps(r, indent=2, default=str), "```"]
        md.append("")
    atomic_write(out / "report.md", lambda f: f.write("\n".join(md).encode()))
    return [*paths, *page.paths, out / "report.md"]
