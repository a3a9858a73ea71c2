"""`python -m arcdae_fast.eval --run DIR [--ckpt PATH] [--suite probe,regress,tad,recon,fid]
[--split test] [--data DATASET] [--out DIR] [--latent FILE] [--no-progress] [section.key=value ...]`

Evaluates a run folder (of the trainer, or of `python -m arcdae_fast.convert`) on its EMA
weights, on the run's own dataset unless `--data` / `data.*` overrides say otherwise, and
writes DIR/eval/<step>/: eval.json (every number, the settings, the data and checkpoint used),
report.md and its plots.

Suites (SPEC section 6; settings are `eval.*` keys, `python -m arcdae_fast.info --keys`):
  probe    linear attribute probe on standardised codes: Linear + BCE, Adam 1e-3, 15 epochs,
           batch 128, best validation epoch; test mean AP and per attribute
           (eval.probe_epochs, probe_lr, probe_batch_size, label_fraction)
  regress  the same on continuous targets (LFW attributes, the bundled factors): Pearson r
           and MSE per target
  tad      TAD and ATTRS as InfoDiffusion computes them (eval.tad_threshold, tad_mi_threshold)
  recon    decoding from the DDIM-inverted x_T and from a random x_T (eval.recon_steps,
           recon_images): MSE, PSNR, SSIM on [0, 1], LPIPS (AlexNet) on [-1, 1]
  fid      rFID of those reconstructions against the split (Inception-V3 pool features);
           with the run's latent DDIM (train_latent; --latent) or a method's prior (dmz) also
           the FID of eval.fid_samples unconditional samples against the same statistics
Probes train on the train split, pick their epoch on valid, and report on --split; the other
suites run on --split. Datasets without an official split are split 80/10/10
(eval.split_seed). LPIPS and FID need pretrained weights from eval.weights_dir (or
$ARCDAE_FAST_WEIGHTS, or torch.hub's cache); without them those parts are skipped with one
line naming the file and where to get it, and the rest runs. Exit status: 0, 2 for a bad
argument or config, 3 when a suite asked for with --suite could not run.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from .. import checkpoint, errors, session
from .. import log as logs
from ..config import SUITES
from ..latent import find as find_latent
from . import need_extra, report

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--ckpt", type=Path, default=None, help="a checkpoint (default: the newest)")
    p.add_argument("--suite", default=None, help=f"comma-separated, of {','.join(SUITES)}")
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
        bad = [s for s in names if s not in SUITES]
        if bad or not names:
            p.error(
                f"--suite: unknown suite {bad[0] if bad else ''!r}; suites: {', '.join(SUITES)}"
            )
        a.suites, a.explicit = names, True
    else:
        a.suites, a.explicit = list(SUITES), False
    return a


def evaluate(a: argparse.Namespace) -> int:
    overrides = list(a.overrides) + ([f"data.dataset={a.data}"] if a.data else [])
    run = session.load_run(a.run, a.ckpt, overrides)
    for note in run.notes:
        log.info(note)
    cfg = run.cfg
    # only the fid suite samples (and DiffAE's latent net is ~100M parameters with its EMA)
    latent = find_latent(a.run, a.latent, run.device) if "fid" in a.suites else None
    from .suites import Evaluator

    ev = Evaluator(
        cfg,
        run.method,
        run.ema,
        run.device,
        a.split,
        progress=logs.bars(a.no_progress),
        latent=latent,
    )
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        results = ev.run(a.suites)
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
        elif r.get("lpips_note"):
            log.warning(f"warning: eval {name}: LPIPS not computed: {r['lpips_note']}")
    log.info(f"wrote {', '.join(str(p) for p in paths)}")
    for line in summary(results):
        print(line)
    return 3 if failed else 0


def summary(results: dict) -> list[str]:
    """One line per suite with its headline numbers."""
    lines = []
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"{name}: not run")
        elif name == "probe":
            lines.append(f"probe: mean AP {r['mean_ap']:.4f}")
            if "best" in r.get("grid", {}):
                b = r["grid"]["best"]
                lines.append(
                    f"probe grid: best cell {b['layer']} at t={b['t']}: mean AP "
                    f"{b['mean_ap']:.4f} ({len(r['grid']['cells'])} cells)"
                )
        elif name == "regress":
            lines.append(
                f"regress: mean Pearson r {r['mean_pearson_r']:.4f}, MSE {r['mean_mse']:.4f}"
            )
        elif name == "tad":
            lines.append(f"tad: TAD {r['tad']:.4f}, ATTRS {r['attrs']}")
        elif name == "transfer":
            lines.append(
                f"transfer: mean AP in domain {r['in_domain_ap']:.4f}, on {r['target']} "
                f"{r['transfer_ap']:.4f}"
            )
        elif name == "steps":
            parts = [f"{n}: MSE {v['mse']:.5f} SSIM {v['ssim']:.4f}" for n, v in r["steps"].items()]
            lines.append("steps: " + "; ".join(parts))
        elif name == "recon":
            parts = [
                f"{s}: MSE {r[s]['mse']:.5f} PSNR {r[s]['psnr']:.2f} SSIM {r[s]['ssim']:.4f}"
                for s in ("inverted", "random")
            ]
            lines.append("recon: " + "; ".join(parts))
        elif name == "fid":
            line = f"fid: rFID inverted {r['rfid_inverted']:.3f}, random {r['rfid_random']:.3f}"
            if "sample_fid" in r:
                line += f"; sample FID {r['sample_fid']:.3f} ({r['samples']} samples)"
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)

    def work() -> int:
        need_extra("python -m arcdae_fast.eval")
        return evaluate(a)

    return errors.run(work)
