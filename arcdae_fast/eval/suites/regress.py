"""`regress`: ridge regression of continuous targets from the codes (eval/probe.py): test
Pearson r and MSE."""

from __future__ import annotations

from ..context import Evaluator, SuiteUnavailable
from ..probe import regression_probe
from ..registry import register
from ..report import Page, fit, fmt


def _report(r: dict, page: Page) -> list[str]:
    return [
        "",
        f"mean Pearson r **{fmt(r['mean_pearson_r'])}**, mean MSE "
        f"**{fmt(r['mean_mse'])}** (standardised targets; {fit(r)})",
        "",
        "| target | Pearson r | MSE |",
        "|---|---|---|",
        *(f"| {k} | {fmt(v['pearson_r'])} | {fmt(v['mse'])} |" for k, v in r["per_target"].items()),
    ]


@register(
    "regress",
    "regression probe: Pearson r and MSE (continuous targets)",
    flat=lambda r: {"eval_regress_r": r["mean_pearson_r"], "eval_regress_mse": r["mean_mse"]},
    lines=lambda r: [f"regress: mean Pearson r {r['mean_pearson_r']:.4f}, MSE {r['mean_mse']:.4f}"],
    report=_report,
)
def regress(ev: Evaluator) -> dict:
    tr, va, te = ev.probe_splits()
    if tr.factors is None:
        raise SuiteUnavailable(
            f"data.dataset={ev.cfg.data.dataset!r} has no continuous targets (LFW's "
            "attributes and the bundled faces' factors do)"
        )
    names = ev.dataset("train").factor_names
    return regression_probe(
        (tr.z, va.z, te.z), (tr.factors, va.factors, te.factors), names, ev.settings()
    )
