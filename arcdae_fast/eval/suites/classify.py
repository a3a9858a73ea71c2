"""`classify` (SPEC section 6, DDAE's linear evaluation): on class-labelled data
(fashion_mnist, cifar10, class folders), the converged multinomial linear probe's test top-1
(top-5 with more than 10 classes; eval.label_fraction of the training labels) and the
weighted k-NN's top-1 (eval.knn_k, eval.knn_temperature; eval/probe.py). With
eval.baselines the same probes on raw pixels and on the same network at random
initialisation (the run's train.seed, as its step 0 was): a representation is worth its
training only where it beats both. With eval.probe_grid_t, the linear probe over the (layer x
t) grid too (methods with readouts: ddaepp)."""

from __future__ import annotations

import torch

from ... import methods
from ..codes import Codes
from ..context import Evaluator, SuiteUnavailable
from ..probe import class_probe, knn_probe, label_subset
from ..registry import register
from ..report import Page, fmt
from .probe import readout_grid

SPLITS = ("train", "valid")


def _flat(r: dict) -> dict:
    out = {"eval_classify_top1": r["code"]["top1"], "eval_classify_knn": r["code"]["knn_top1"]}
    for base in ("pixels", "random_init"):
        if base in r:
            out[f"eval_classify_{base}_top1"] = r[base]["top1"]
    return out


def _report(r: dict, page: Page) -> list[str]:
    return [
        "",
        f"{r['classes']} classes; converged linear probe (C on the validation split) and "
        "weighted k-NN, on the codes and the baselines",
        "",
        "| features | dims | linear top-1 | k-NN top-1 | C | converged |",
        "|---|---|---|---|---|---|",
        *(
            f"| {who} | {v['dims']} | {fmt(v['top1'])} | {fmt(v['knn_top1'])} | {v['c']:g} "
            f"| {'yes' if v['convergence']['converged'] else 'no'} |"
            for who, v in r.items()
            if isinstance(v, dict) and "top1" in v and "dims" in v
        ),
    ]


@register(
    "classify",
    "class labels: linear-evaluation top-1 and k-NN top-1, with pixel and random-init baselines",
    flat=_flat,
    lines=lambda r: [
        f"classify: {who} linear top-1 {r[who]['top1']:.4f}, k-NN top-1 {r[who]['knn_top1']:.4f}"
        for who in ("code", "pixels", "random_init")
        if who in r
    ],
    report=_report,
)
def classify(ev: Evaluator) -> dict:
    codes = ev.probe_splits()
    if codes[0].labels is None:
        raise SuiteUnavailable(
            f"data.dataset={ev.cfg.data.dataset!r} has no class labels (fashion_mnist, "
            "cifar10 and class folders, data.dataset=imagenet, do)"
        )
    n = len(ev.dataset("train").class_names)
    out = {"classes": n, "code": _score(ev, codes, n)}
    if ev.ec.baselines:
        for name, method in (("pixels", Pixels()), ("random_init", _random_init(ev))):
            base = [_encode(ev, s, method, name) for s in (*SPLITS, ev.split)]
            out[name] = _score(ev, base, n)
    if ev.ec.probe_grid_t:
        labels = [c.labels for c in codes]

        def score(zs):
            r = class_probe(zs, labels, n, ev.settings())
            return {"top1": r["top1"], "valid_top1": r["valid_top1"]}

        out["grid"] = readout_grid(ev, score, "valid_top1")
    return out


def _score(ev: Evaluator, codes, n: int) -> dict:
    tr, va, te = codes
    r = class_probe((tr.z, va.z, te.z), (tr.labels, va.labels, te.labels), n, ev.settings())
    keep = label_subset(len(tr.z), ev.settings())  # the linear probe's training rows
    r["knn_top1"] = knn_probe(
        tr.z[keep], tr.labels[keep], te.z, te.labels, n, ev.ec.knn_k, ev.ec.knn_temperature
    )
    r["dims"] = int(tr.z.shape[1])
    return r


def _encode(ev: Evaluator, split: str, method, name: str) -> Codes:
    return ev.encode(ev.dataset(split), f"encoding {split} ({name})", method)


class Pixels:
    """The raw-pixel baseline: an image's code is its pixels."""

    def encode(self, x: torch.Tensor, nets=None, **readout) -> torch.Tensor:
        return x.reshape(len(x), -1)


class _Untrained:
    """The method at its initialisation, encoding with its own (untrained) networks."""

    def __init__(self, method):
        self.method = method

    def encode(self, x: torch.Tensor, nets=None, **readout) -> torch.Tensor:
        return self.method.encode(x, self.method.trainable(), **readout)


def _random_init(ev: Evaluator) -> _Untrained:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ev.cfg.train.seed)
        method = methods.build(ev.cfg).to(ev.device).eval()
    return _Untrained(method)
