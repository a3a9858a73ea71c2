"""`probe`: the attribute probe's test AP (eval/probe.py); with eval.probe_grid_t the DDAE
protocol's (layer x t) grid too."""

from __future__ import annotations

from ..context import Evaluator, SuiteUnavailable
from ..probe import attribute_probe
from ..registry import register
from ..report import Page, bars, fit, fmt


def no_attributes(ev: Evaluator) -> SuiteUnavailable:
    return SuiteUnavailable(
        f"data.dataset={ev.cfg.data.dataset!r} has no binary attributes (CelebA, CelebA-HQ "
        "and the bundled faces do)"
    )


def _flat(r: dict) -> dict:
    out = {"eval_probe_ap": r["mean_ap"]}
    if "best" in r.get("grid", {}):
        out["eval_probe_grid_best_ap"] = r["grid"]["best"]["mean_ap"]
    return out


def _lines(r: dict) -> list[str]:
    out = [f"probe: mean AP {r['mean_ap']:.4f}"]
    if "best" in r.get("grid", {}):
        b = r["grid"]["best"]
        out.append(
            f"probe grid: best cell {b['layer']} at t={b['t']}: mean AP {b['mean_ap']:.4f} "
            f"({len(r['grid']['cells'])} cells)"
        )
    return out


def _report(r: dict, page: Page) -> list[str]:
    md = [
        "",
        f"mean AP **{fmt(r['mean_ap'])}** ({fit(r)}, validation "
        f"{fmt(r['valid_mean_ap'])}, {r['train_samples']} training codes)",
        "",
        "| attribute | AP |",
        "|---|---|",
    ]
    md += [f"| {k} | {fmt(v)} |" for k, v in r["per_attribute"].items()]
    keys = [k for k, v in r["per_attribute"].items() if v is not None]
    path = page.out / "ap.png"
    bars(
        path,
        keys,
        [r["per_attribute"][k] for k in keys],
        f"attribute probe: mean AP {r['mean_ap']:.3f}",
        "AP",
    )
    page.paths.append(path)
    md += ["", "![AP per attribute](ap.png)"]
    grid = r.get("grid")
    if grid is not None:
        md += ["", "### Probe grid (layer x t)", ""]
        if "skipped" in grid:
            md.append(f"not run: {grid['skipped']}")
        else:
            md += ["| cell | mean AP | validation AP |", "|---|---|---|"]
            md += [
                f"| {k} | {fmt(v['mean_ap'])} | {fmt(v['valid_mean_ap'])} |"
                for k, v in grid["cells"].items()
            ]
            b = grid["best"]
            md += ["", f"best cell (by validation AP): {b['layer']} at t={b['t']}"]
    return md


@register(
    "probe",
    "attribute linear probe: test mean AP (binary attributes)",
    flat=_flat,
    lines=_lines,
    report=_report,
)
def probe(ev: Evaluator) -> dict:
    tr, va, te = ev.probe_splits()
    if tr.attrs is None:
        raise no_attributes(ev)
    names = ev.dataset("train").attr_names
    out = attribute_probe((tr.z, va.z, te.z), (tr.attrs, va.attrs, te.attrs), names, ev.settings())
    if ev.ec.probe_grid_t:
        out["grid"] = grid(ev, names)
    return out


def grid(ev: Evaluator, names: list[str]) -> dict:
    """The attribute probe over the (layer x t) grid: mean AP per cell."""
    labels = [ev.codes(s).attrs for s in ("train", "valid", ev.split)]

    def score(zs):
        r = attribute_probe(zs, labels, names, ev.settings())
        return {"mean_ap": r["mean_ap"], "valid_mean_ap": r["valid_mean_ap"]}

    return readout_grid(ev, score, "valid_mean_ap")


def readout_grid(ev: Evaluator, score, key: str) -> dict:
    """The DDAE protocol: a probe on codes read at every (layer, t) of eval.probe_grid_layers
    x eval.probe_grid_t; `score(codes of train, valid, evaluated split)` per cell and the best
    cell by its validation score `key` (reported on the evaluated split)."""
    readouts = getattr(ev.method, "readouts", None)
    if readouts is None:
        return {"skipped": f"method {ev.cfg.method.name!r} has one readout (no layer x t)"}
    layers = list(ev.ec.probe_grid_layers) or readouts()
    bad = [x for x in layers if x not in readouts()]
    if bad:
        return {"skipped": f"eval.probe_grid_layers: {bad[0]!r} is not one of {readouts()}"}
    cells = {}
    for layer in layers:
        for t in ev.ec.probe_grid_t:
            zs = [
                ev.encode(ev.dataset(s), f"encoding {s} at {layer}, t={t}", t=t, layer=layer).z
                for s in ("train", "valid", ev.split)
            ]
            cells[f"{layer}@{t}"] = score(zs)
    best = max(cells, key=lambda k: cells[k][key])
    layer, t = best.split("@")
    return {"cells": cells, "best": {"layer": layer, "t": int(t), **cells[best]}}
