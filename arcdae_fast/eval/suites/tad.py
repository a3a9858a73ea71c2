"""`tad`: TAD and ATTRS (InfoDiffusion's disentanglement scores, eval/tad.py)."""

from __future__ import annotations

from ..context import Evaluator
from ..registry import register
from ..tad import tad as tad_score
from .probe import no_attributes


@register(
    "tad",
    "disentanglement: TAD and ATTRS (binary attributes)",
    flat=lambda r: {"eval_tad": r["tad"], "eval_attrs": r["attrs"]},
    lines=lambda r: [f"tad: TAD {r['tad']:.4f}, ATTRS {r['attrs']}"],
)
def tad(ev: Evaluator) -> dict:
    c = ev.codes(ev.split)
    if c.attrs is None:
        raise no_attributes(ev)
    names = ev.dataset(ev.split).attr_names
    return tad_score(c.z, c.attrs, names, ev.ec.tad_threshold, ev.ec.tad_mi_threshold)
