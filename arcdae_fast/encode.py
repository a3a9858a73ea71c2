"""`python -m arcdae_fast.encode --run DIR --out LATENTS [--data DATASET] [--split S]
[--samples] [--shard-size N] [--dtype float16|float32] [section.key=value ...]`

Writes the codes of a trained run (its EMA weights, `method.encode`: DGAE's posterior mean,
(B, c, h, w); ArcDAE's / DiffAE's vector z) for every image of a dataset (the run's own unless
`--data` / `data.*` say otherwise; centre crop, no flip), in a layout a latent diffusion
trainer reads (e.g. a DiT on DGAE latents, as the DGAE paper trains):

    LATENTS/meta.json                run, checkpoint, step, method, data, code shape, dtype,
                                     shards, count, classes (ImageNet layout: sorted folder
                                     names; "label" indexes them)
    LATENTS/mean_00000.npy ...       (n, *shape) codes of shard k, rows in dataset order
    LATENTS/sample_00000.npy ...     --samples: one reparameterised draw z = mean + std * n
                                     (methods with a posterior: DGAE), seeded per shard
    LATENTS/index_00000.jsonl ...    one line per row: {"file", "row", "label"?}

Unreadable images are skipped (named on stderr) and left out of the index. Each shard is
written atomically; run the same command again after an interruption and the finished shards
are kept and the rest written (meta.json, written first and completed last, makes a rerun
with other settings into the same folder an error).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, errors, session
from . import log as logs
from .config.schema import ConfigError
from .data.datasets import ImageDataset
from .eval.codes import batches
from .eval.data import split_dataset
from .losses import reparameterize

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.encode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="the run folder")
    p.add_argument("--ckpt", type=Path, default=None, help="a checkpoint (default: the newest)")
    p.add_argument("--out", type=Path, required=True, help="the latents folder")
    p.add_argument("--data", default=None, help="encode this data.dataset instead")
    p.add_argument("--split", default="train", choices=("train", "valid", "test", "all"))
    p.add_argument("--samples", action="store_true", help="also a posterior sample per image")
    p.add_argument("--shard-size", type=int, default=10_000, help="images per shard")
    p.add_argument("--batch-size", type=int, default=None, help="default: eval.batch_size")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    p.add_argument("--seed", type=int, default=0, help="of the posterior samples")
    p.add_argument("--no-progress", action="store_true")
    checkpoint.add_trust_flag(p)
    logs.add_flags(p)
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    a = p.parse_intermixed_args(argv)
    if a.shard_size < 1:
        p.error("--shard-size must be >= 1")
    if a.batch_size is not None and a.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return a


def class_labels(ds: ImageDataset, dataset: str) -> tuple[list[str], list[int]] | None:
    """ImageNet's layout: the class of each file is its folder (sorted names -> 0..K-1)."""
    if dataset != "imagenet":
        return None
    names = sorted({Path(f).parent.name for f in ds.files})
    lookup = {n: i for i, n in enumerate(names)}
    return names, [lookup[Path(f).parent.name] for f in ds.files]


def encode(a: argparse.Namespace) -> int:
    overrides = list(a.overrides) + ([f"data.dataset={a.data}"] if a.data else [])
    run = session.load_run(a.run, a.ckpt, overrides)
    for note in run.notes:
        log.info(note)
    cfg, method, nets = run.cfg, run.method, run.ema
    if a.samples and not hasattr(method, "posterior"):
        raise ConfigError(
            f"--samples: method {cfg.method.name} has no posterior to sample (its codes are "
            "deterministic); leave --samples out"
        )
    ds = split_dataset(cfg.data, a.split, cfg.eval.split_seed)
    bs = a.batch_size or cfg.eval.batch_size
    labels = class_labels(ds, cfg.data.dataset)
    root = Path(cfg.data.root).expanduser() if cfg.data.root else None
    n_shards = -(-len(ds) // a.shard_size)
    meta = {
        "run": str(a.run),
        "checkpoint": str(run.checkpoint),
        "step": run.step,
        "method": cfg.method.name,
        "data": {"dataset": cfg.data.dataset, "root": cfg.data.root, "split": a.split},
        "resolution": cfg.data.resolution,
        "dtype": a.dtype,
        "shard_size": a.shard_size,
        "samples": a.samples,
        "seed": a.seed,
        "images": len(ds),
        "shards": n_shards,
    }
    _check_folder(a.out, meta)
    errors.make_dir(a.out)
    errors.check_writable(a.out)
    _write_meta(a.out, meta)  # first, so that a rerun finds which settings the shards have
    dtype = np.float16 if a.dtype == "float16" else np.float32
    count, shape = 0, None
    for k in range(n_shards):
        names = _shard_files(k, a.samples)
        if all((a.out / n).is_file() for n in names):  # written by an earlier, interrupted run
            shape = _shape_of(a.out / names[0], shape)
            count += sum(1 for ln in (a.out / names[-1]).read_text().splitlines() if ln)
            continue
        lo, hi = k * a.shard_size, min(len(ds), (k + 1) * a.shard_size)
        part = ds.subset(np.arange(lo, hi))
        means, draws, rows = [], [], []
        gen = torch.Generator(device=run.device).manual_seed(a.seed * 1_000_003 + k)
        desc = f"shard {k + 1}/{n_shards}"
        for batch in batches(part, bs, desc, logs.bars(a.no_progress), cfg.data.num_workers):
            x0 = batch["image"].to(run.device)
            if a.samples:
                mean, logvar = method.posterior(x0, nets)
                noise = torch.randn(mean.shape, generator=gen, device=mean.device)
                draws.append(reparameterize(mean, logvar, noise).float().cpu().numpy())
            else:
                mean = method.encode(x0, nets)
            means.append(mean.float().cpu().numpy())
            rows += (batch["index"] + lo).tolist()
        if not rows:
            raise ConfigError(f"none of the images {lo}..{hi - 1} of the split can be decoded")
        mean_arr = np.concatenate(means).astype(dtype)
        shape = list(mean_arr.shape[1:])
        _save_npy(a.out / names[0], mean_arr)
        if a.samples:
            _save_npy(a.out / names[1], np.concatenate(draws).astype(dtype))
        lines = []
        for r, i in enumerate(rows):
            f = Path(ds.files[i])
            entry = {
                "file": str(f.relative_to(root)) if root and f.is_relative_to(root) else str(f)
            }
            entry["row"] = r
            if labels is not None:
                entry["label"] = labels[1][i]
            lines.append(json.dumps(entry))
        text = ("\n".join(lines) + "\n").encode()
        checkpoint.atomic_write(a.out / names[-1], lambda f, t=text: f.write(t), "latent index")
        count += len(rows)
    meta.update(shape=shape, count=count, skipped=len(ds) - count)
    if labels is not None:
        meta["classes"] = labels[0]
    _write_meta(a.out, meta)
    print(f"wrote {count} codes of shape {shape} in {n_shards} shard(s) to {a.out}")
    return 0


def _shard_files(k: int, samples: bool) -> list[str]:
    return [
        f"mean_{k:05d}.npy",
        *([f"sample_{k:05d}.npy"] if samples else []),
        f"index_{k:05d}.jsonl",
    ]


def _shape_of(path: Path, known: list[int] | None) -> list[int]:
    return known or list(np.load(path, mmap_mode="r").shape[1:])


def _save_npy(path: Path, arr: np.ndarray) -> None:
    checkpoint.atomic_write(path, lambda f: np.save(f, arr), "latent shard")


def _write_meta(out: Path, meta: dict) -> None:
    text = json.dumps(meta, indent=2).encode()
    checkpoint.atomic_write(out / "meta.json", lambda f: f.write(text), "latent metadata")


def _check_folder(out: Path, meta: dict) -> None:
    """A folder holding the latents of other settings is refused (no mixing of shards)."""
    old = out / "meta.json"
    if not old.is_file():
        return
    try:
        have = json.loads(old.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{old} is not readable latent metadata ({e}); choose another --out"
        ) from None
    keys = ("checkpoint", "method", "data", "resolution", "dtype", "shard_size", "samples", "seed")
    diff = [k for k in keys if have.get(k) != meta[k]]
    if diff:
        raise ConfigError(
            f"{out} holds latents written with other settings (differs in: {', '.join(diff)}); "
            "choose another --out"
        )


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    return errors.run(lambda: encode(a))


if __name__ == "__main__":
    sys.exit(main())
