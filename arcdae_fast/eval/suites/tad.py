"""`tad`: TAD and ATTRS (InfoDiffusion's disentanglement scores, eval/tad.py)."""

from __future__ import annotations

from ..context import Evaluator
from ..registry import register
from ..report import Page, bars, fmt
from ..tad import tad as tad_score
from .probe import no_attributes


def _report(r: dict, page: Page) -> list[str]:
    per = r["per_attribute"]
    md = [
        "",
        f"TAD **{fmt(r['tad'])}**, ATTRS **{r['attrs']}** (best AUROC >= "
        f"{r['threshold']}, shared information <= {r['mi_threshold']})",
        "",
        "| attribute | best AUROC | dim | gap | shared info | counted |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {k} | {fmt(v['best_auroc'])} | {v['best_dim']} | {fmt(v['gap'])} | "
        f"{fmt(v['shared_information'])} | {'yes' if v['counted'] else 'no'} |"
        for k, v in per.items()
    ]
    path = page.out / "tad.png"
    bars(
        path,
        list(per),
        [v["best_auroc"] for v in per.values()],
        f"TAD {r['tad']:.3f}, ATTRS {r['attrs']}: best AUROC per attribute",
        "best AUROC",
        line=r["threshold"],
    )
    page.paths.append(path)
    return [*md, "", "![best AUROC per attribute](tad.png)"]


@register(
    "tad",
    "disentanglement: TAD and ATTRS (binary attributes)",
    flat=lambda r: {"eval_tad": r["tad"], "eval_attrs": r["attrs"]},
    lines=lambda r: [f"tad: TAD {r['tad']:.4f}, ATTRS {r['attrs']}"],
    report=_report,
)
def tad(ev: Evaluator) -> dict:
    c = ev.codes(ev.split)
    if c.attrs is None:
        raise no_attributes(ev)
    names = ev.dataset(ev.split).attr_names
    return tad_score(c.z, c.attrs, names, ev.ec.tad_threshold, ev.ec.tad_mi_threshold)
