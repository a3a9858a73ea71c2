"""`transfer`: the attribute probe fitted on this data's train / valid codes, tested on its
own test split (in domain) and on another domain's: the test images with shifted colours
(eval.transfer_shift), or eval.transfer_dataset's test split."""

from __future__ import annotations

import dataclasses

import torch

from ..codes import Codes
from ..context import Evaluator, SuiteUnavailable
from ..data import split_dataset
from ..probe import attribute_probe
from ..registry import register
from ..report import Page, fmt
from .probe import no_attributes


def _report(r: dict, page: Page) -> list[str]:
    return [
        "",
        f"probe fitted on this data's train split; mean AP in domain "
        f"**{fmt(r['in_domain_ap'])}**, on {r['target']} **{fmt(r['transfer_ap'])}**",
        "",
        "| attribute | in domain | transfer |",
        "|---|---|---|",
        *(
            f"| {k} | {fmt(v['in_domain'])} | {fmt(v['transfer'])} |"
            for k, v in r["per_attribute"].items()
        ),
    ]


@register(
    "transfer",
    "the attribute probe tested on another domain (shifted colours or another dataset)",
    flat=lambda r: {"eval_transfer_ap": r["transfer_ap"]},
    lines=lambda r: [
        f"transfer: mean AP in domain {r['in_domain_ap']:.4f}, on {r['target']} "
        f"{r['transfer_ap']:.4f}"
    ],
    report=_report,
)
def transfer(ev: Evaluator) -> dict:
    tr, va, te = ev.probe_splits()
    if tr.attrs is None:
        raise no_attributes(ev)
    names = ev.dataset("train").attr_names
    target, desc = _target(ev, names)

    def fit(z, y):  # the same train / valid fit, tested on (z, y)
        return attribute_probe((tr.z, va.z, z), (tr.attrs, va.attrs, y), names, ev.settings())

    same, moved = fit(te.z, te.attrs), fit(target.z, target.attrs)
    per = {
        k: {"in_domain": same["per_attribute"][k], "transfer": moved["per_attribute"][k]}
        for k in names
    }
    return {
        "target": desc,
        "in_domain_ap": same["mean_ap"],
        "transfer_ap": moved["mean_ap"],
        "per_attribute": per,
    }


def _target(ev: Evaluator, names: list[str]) -> tuple[Codes, str]:
    ec = ev.ec
    if ec.transfer_dataset is None:
        shifted = Shifted(ev.method, ec.transfer_shift)
        codes = ev.encode(ev.dataset(ev.split), "encoding the shifted split", shifted)
        return codes, f"{ev.split} split, colours shifted by {ec.transfer_shift}"
    data = dataclasses.replace(ev.cfg.data, dataset=ec.transfer_dataset, root=ec.transfer_root)
    ds = split_dataset(data, "test", ec.split_seed, ec.max_images)
    if ds.attr_names != names:
        raise SuiteUnavailable(
            f"eval.transfer_dataset={ec.transfer_dataset!r} has other attributes than "
            f"{ev.cfg.data.dataset!r} ({len(ds.attr_names or [])} vs {len(names)})"
        )
    return ev.encode(ds, "encoding the other domain"), f"{ec.transfer_dataset} test split"


class Shifted:
    """A method whose encode sees colour-shifted images: red x (1 + s), blue x (1 - s) in
    [0, 1] pixel space, clamped (a shifted colour distribution)."""

    def __init__(self, method, s: float):
        self.method, self.gain = method, torch.tensor([1 + s, 1.0, 1 - s]).view(1, 3, 1, 1)

    def encode(self, x: torch.Tensor, nets):
        y = ((x + 1) / 2 * self.gain.to(x)).clamp(0, 1) * 2 - 1
        return self.method.encode(y, nets)
