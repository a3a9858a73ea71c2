"""What the inference commands (sample, reconstruct, interpolate, manipulate) share: their
common flags, loading the model, choosing input images, writing PNG grids."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from . import checkpoint, errors
from . import log as logs
from .diffusion.solvers import SOLVERS
from .viz import to_grid

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m


def parser(prog: str, doc: str, images: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m arcdae_fast.{prog}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder (trained or converted)")
    p.add_argument("--ckpt", type=Path, default=None, help="a checkpoint (default: the newest)")
    p.add_argument("--out", type=Path, default=None, help="the folder the PNGs go to (required)")
    p.add_argument("--steps", type=int, default=0, help="decoding steps (default eval.recon_steps)")
    p.add_argument(
        "--solver",
        default=None,
        choices=SOLVERS + ("euler",),
        help="decoding solver (default: ddim; a flow method's own solver)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    checkpoint.add_trust_flag(p)
    logs.add_flags(p)
    if images:
        p.add_argument(
            "--images",
            nargs="+",
            type=Path,
            default=None,
            help="image files (default: the run's own dataset split)",
        )
        p.add_argument("--split", default="test", choices=("train", "valid", "test"))
        p.add_argument(
            "--index",
            type=int,
            nargs="+",
            default=None,
            help="rows of --split (default: the first ones)",
        )
    p.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="data.* / eval.* / train.device"
    )
    return p


def parse(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    a = p.parse_intermixed_args(argv)
    if a.out is None and not getattr(a, "list", False):
        p.error("the following arguments are required: --out")
    if a.steps < 0:
        p.error("--steps must be >= 1")
    return a


def open_model(a: argparse.Namespace):
    from .api import load

    m = load(a.run, a.ckpt, getattr(a, "latent", None), a.overrides, a.steps)
    for note in m.run.notes:
        log.info(note)
    return m


def inputs(m, a: argparse.Namespace, n: int) -> torch.Tensor:
    if a.images:
        return m.load_images(a.images)
    return m.images(n, a.split, a.index)


def say(a: argparse.Namespace, msg: str) -> None:
    log.info(msg)


def save_grid(path: Path, rows: list[torch.Tensor]) -> Path:
    errors.make_dir(path.parent)
    with errors.doing("write the image grid", path):
        to_grid(rows).save(path)
    return path


def save_json(path: Path, obj: dict) -> None:
    with errors.doing("write", path):
        path.write_text(json.dumps(obj, indent=1) + "\n")


def main(work, a: argparse.Namespace) -> int:
    return errors.run(lambda: work(a))
