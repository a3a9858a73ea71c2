"""`python -m arcdae_fast.eval --run DIR [--ckpt PATH] [--suite probe,classify,recon,...]
[--split test] [--data DATASET] [--out DIR] [--latent FILE] [--no-progress] [section.key=value ...]`

Evaluates a run folder (of the trainer, or of `python -m arcdae_fast.convert`) on its EMA
weights, on the run's own dataset unless `--data` / `data.*` overrides say otherwise, and
writes DIR/eval/<step>/: eval.json (every number, the settings, the data and checkpoint used),
report.md and its plots.

Suites (SPEC section 6; settings are `eval.*` keys, `python -m arcdae_fast.info --keys`;
each is one file in arcdae_fast/eval/suites/, listed with --help):
  probe     attribute probe: converged logistic regression per attribute on standardised
            codes, C picked on valid (eval.probe_protocol=diti: DiTi's Adam probe)
  regress   ridge regression of continuous targets (LFW, the bundled factors): Pearson r, MSE
  classify  class labels (fashion_mnist, cifar10, class folders): linear-evaluation top-1 and
            weighted k-NN top-1, beside raw pixels and the random-init network (eval.baselines)
  tad       TAD and ATTRS as InfoDiffusion computes them (eval.tad_threshold, tad_mi_threshold)
  transfer  the attribute probe tested on shifted colours or eval.transfer_dataset
  recon     decoding from the DDIM-inverted x_T and from a random x_T (eval.recon_steps,
            recon_images): MSE, PSNR, SSIM on [0, 1], LPIPS (AlexNet) on [-1, 1]
  steps     quality against the number of decoding steps (eval.steps_grid)
  fid       rFID of those reconstructions against the split (Inception-V3 pool features);
            with the run's latent DDIM (train_latent; --latent) or a method's prior (dmz) also
            the FID of eval.fid_samples unconditional samples against the same statistics
Probes fit on the train split, pick their regularisation on valid, and report on --split;
the other suites run on --split. Datasets without an official split are split 80/10/10
(eval.split_seed). LPIPS and FID need pretrained weights from eval.weights_dir (or
$ARCDAE_FAST_WEIGHTS, or torch.hub's cache); their files are checked before any work: a
missing one is one line naming the file and where to get it (fid: not run; recon: no
LPIPS). Exit status: 0, 2 for a bad argument or config, 3 when a suite asked for with --suite
could not run.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from .. import checkpoint, errors, session
from .. import log as logs
from ..latent import find as find_latent
from . import need_extra, registry, report

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--ckpt", type=Path, default=None, help="a checkpoint (default: the newest)")
    suites = registry.load()
    p.add_argument(
        "--suite",
        default=None,
        help="comma-separated (default: all); "
        + "; ".join(f"{s.name}: {s.doc}" for s in suites.values()),
    )
    p.add_argument("--split", default="test", choices=("test", "valid"))
    p.add_argument("--data", default=None, help="evaluate on this data.dataset instead")
    p.add_argument("--out", type=Path, default=None, help="default: RUN/eval/<step>")
    p.add_argument(
        "--latent", type=Path, default=None, help="latent DDIM (default: RUN/latent/latent.pt)"
    )
    p.add_argument("--no-progress", action="store_true")
    checkpoint.add_trust_flag(p)
    logs.add_flags(p)
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    a = p.parse_intermixed_args(argv)
    if a.suite is not None:
        names = [s for s in a.suite.split(",") if s]
        bad = registry.unknown(names)
        if bad or not names:
            p.error(f"--suite: unknown suite {bad or ''!r}; suites: {', '.join(suites)}")
        a.suites, a.explicit = names, True
    else:
        a.suites, a.explicit = list(suites), False
    return a


def evaluate(a: argparse.Namespace) -> int:
    overrides = list(a.overrides) + ([f"data.dataset={a.data}"] if a.data else [])
    run = session.load_run(a.run, a.ckpt, overrides)
    for note in run.notes:
        log.info(note)
    cfg = run.cfg
    # only the fid suite samples (and DiffAE's latent net is ~100M parameters with its EMA)
    latent = find_latent(a.run, a.latent, run.device) if "fid" in a.suites else None
    from .context import Evaluator

    ev = Evaluator(
        cfg,
        run.method,
        run.ema,
        run.device,
        a.split,
        progress=logs.bars(a.no_progress),
        latent=latent,
    )
    stops, warnings = registry.check(ev, a.suites)
    for name, why in warnings.items():
        log.warning(f"warning: eval {name}: {why}")
    if stops and a.explicit:  # said before any work (exit 3, as for any suite that cannot run)
        for name, why in stops.items():
            log.error(f"error: eval {name}: not run: {why}")
        return 3
    for name, why in stops.items():
        log.warning(f"note: eval {name}: not run: {why}")
    suites = [n for n in a.suites if n not in stops]
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        results = registry.run(ev, suites)
    results.update({n: {"skipped": why} for n, why in stops.items()})
    rows = None
    if "recon" in results and "skipped" not in results["recon"]:
        r = ev.reconstructions()
        rows = [r.originals[:8], r.decoded["inverted"][:8], r.decoded["random"][:8]]
    result = {
        "run": str(a.run),
        "checkpoint": str(run.checkpoint),
        "latent": str(latent.path) if latent is not None else None,
        "step": run.step,
        "method": cfg.method.name,
        "split": a.split,
        "data": {
            "dataset": cfg.data.dataset,
            "root": cfg.data.root,
            "resolution": cfg.data.resolution,
            "images": {s: len(d) for s, d in ev._datasets.items()},
            "unreadable_skipped": {
                s: len(ev._datasets[s]) - len(c.index) for s, c in ev._codes.items()
            },
        },
        "settings": cfg.to_dict()["eval"],
        "suites": results,
        "seconds": round(time.perf_counter() - t0, 1),
        "torch": torch.__version__,
    }
    out = a.out or a.run / "eval" / f"{run.step:08d}"
    paths = report.write(out, result, rows)
    failed = 0
    for name, r in results.items():
        if "skipped" in r:
            level = "error" if a.explicit else "note"
            (log.error if level == "error" else log.warning)(
                f"{level}: eval {name}: not run: {r['skipped']}"
            )
            failed += a.explicit
    log.info(f"wrote {', '.join(str(p) for p in paths)}")
    for line in registry.summary(results):
        print(line)
    return 3 if failed else 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)

    def work() -> int:
        need_extra("python -m arcdae_fast.eval")
        return evaluate(a)

    return errors.run(work)
