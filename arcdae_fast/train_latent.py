"""`python -m arcdae_fast.train_latent --run DIR [--ckpt PATH] [--out DIR] [--steps N]
[--batch-size B] [--hidden H] [--layers L] [--lr LR] [--ema D] [--sample-steps S]
[--ckpt-every K] [--seed S] [--no-progress] [section.key=value ...]`

The settings are the config's `latent` section (`latent.max_steps`, `latent.hidden`, ...;
`python -m arcdae_fast.info --keys`); each flag is a short name of one of its keys (--steps:
latent.max_steps, --ema: latent.ema_decay), and `latent.KEY=VALUE` works as well.

Trains DiffAE's latent DDIM (arcdae_fast/latent.py; its defaults are DiffAE's FFHQ-128
latent model) on the codes of a trained run's training split (its EMA weights), so that
`python -m arcdae_fast.sample --run DIR` draws unconditional images. Writes, under --out
(default RUN/latent):

    codes.pt                the encoded training codes (kept: a rerun reuses them)
    settings.json           the latent section; a rerun that changes a key other than
                            max_steps, sample_steps or ckpt_every is refused
    checkpoints/ckpt_N.pt   atomic, every --ckpt-every steps and at the end (newest 3 kept)
    metrics.jsonl           the mean loss of every 50 steps, img/s (a resume cuts back lines
                            past its checkpoint)
    latent.pt               the final sampler, which `sample` and `arcdae_fast.api` load

It runs on the same loop as `train` (arcdae_fast/loop.py, with its Metrics and Checkpoints
hooks): SIGINT/SIGTERM finish the current step, save a checkpoint and exit (130/143). Run
the same command again after an interruption and it resumes from the newest checkpoint,
exactly (the batch sampler's generator is in the checkpoint); a larger --steps continues a
finished run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, errors, hooks, loop, phases, session, tracking
from . import log as logs
from .config.load import changed_keys
from .config.schema import Config, ConfigError, LatentConfig
from .ema import ema_update, warmup_decay
from .eval.codes import encode_split
from .eval.data import split_dataset
from .latent import OLD_NAMES, LatentDDIM

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m

LOG_EVERY = 50
FLAGS = {  # short flags of the latent section's keys
    "--steps": "max_steps",
    "--batch-size": "batch_size",
    "--hidden": "hidden",
    "--layers": "layers",
    "--lr": "lr",
    "--ema": "ema_decay",
    "--loss": "loss",
    "--sample-steps": "sample_steps",
    "--ckpt-every": "ckpt_every",
    "--seed": "seed",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.train_latent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", type=Path, required=True, help="the trained run folder")
    p.add_argument("--ckpt", type=Path, default=None, help="a checkpoint (default: the newest)")
    p.add_argument("--out", type=Path, default=None, help="default: RUN/latent")
    checkpoint.add_trust_flag(p)
    logs.add_flags(p)
    for flag, key in FLAGS.items():
        default = getattr(LatentConfig(), key)
        p.add_argument(flag, type=type(default), default=None, help=f"latent.{key} ({default})")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="section.key=value")
    a = p.parse_intermixed_args(argv)
    for flag, key in FLAGS.items():
        value = getattr(a, flag[2:].replace("-", "_"))
        if value is not None:
            a.overrides.append(f"latent.{key}={value}")
    return a


def codes_of(run: session.TrainedRun, out: Path, progress: bool) -> torch.Tensor:
    """The training split's codes, encoded once and kept in out/codes.pt."""
    path = out / "codes.pt"
    key = {
        "checkpoint": run.checkpoint.name,
        "step": run.step,
        "data": dataclasses.asdict(run.cfg.data),
    }
    if path.is_file():
        saved = checkpoint.load(path, what="code cache")
        if saved["source"] == key:
            return saved["codes"]
    cfg = run.cfg
    ds = split_dataset(cfg.data, "train", cfg.eval.split_seed)
    z = encode_split(
        run.method,
        run.ema,
        ds,
        batch_size=cfg.eval.batch_size,
        device=run.device,
        desc="encode the training split",
        progress=progress,
    ).z
    shape = _code_shape(run)
    codes = torch.from_numpy(z).reshape(len(z), *shape)
    checkpoint.atomic_write(path, lambda f: torch.save({"source": key, "codes": codes}, f), "codes")
    return codes


def _code_shape(run: session.TrainedRun) -> tuple[int, ...]:
    r = run.cfg.data.resolution
    probe = torch.zeros(1, run.cfg.data.channels, r, r, device=run.device)
    with torch.no_grad():
        return tuple(run.method.encode(probe, run.ema).shape[1:])


def _check_settings(out: Path, s: LatentConfig, run: session.TrainedRun) -> None:
    """A rerun may change only the keys that change nothing (max_steps, sample_steps,
    ckpt_every: schema.py's metadata); the settings go to out/settings.json."""
    path = out / "settings.json"
    if path.is_file():
        have = json.loads(path.read_text())
        was = Path(have.pop("checkpoint", "")).name  # older files: a full path
        old = LatentConfig(**{OLD_NAMES.get(k, k): v for k, v in have.items()})
        changed = changed_keys(Config(latent=old), Config(latent=s), ("nothing",), "latent")
        if was != run.checkpoint.name:
            changed.append(f"the run's checkpoint ({was} -> {run.checkpoint.name})")
        if changed:
            raise ConfigError(
                f"train_latent: {out} holds a latent model with other settings "
                f"({', '.join(changed)}); use another --out or the same settings"
            )
    want = {**dataclasses.asdict(s), "checkpoint": run.checkpoint.name}  # a moved run resumes
    checkpoint.atomic_write(
        path, lambda f: f.write(json.dumps(want, indent=1).encode()), "settings"
    )


class _Trainer:
    """What the shared loop's hooks (arcdae_fast/hooks.py) ask of a trainer: a single
    process that logs to `tracker`, shows `bar` and saves with `save`."""

    main, world = True, 1

    def __init__(self, model: LatentDDIM, opt: Any, gen: torch.Generator, out: Path, bars: bool):
        self.model, self.opt, self.gen, self.out, self.progress = model, opt, gen, out, bars

    def save(self, step: int) -> Path:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "step": step,
        }
        return checkpoint.save(self.out / "checkpoints", step, state)

    def resume(self, device: torch.device) -> int:
        found = checkpoint.load_latest(self.out / "checkpoints", map_location=device)
        if not found:
            return 0
        step, state, path = found
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"].cpu() if device.type == "cpu" else state["generator"])
        log.info(f"resuming from {path} (step {step})")
        return step


def train(a: argparse.Namespace) -> int:
    run = session.load_run(a.run, a.ckpt, a.overrides)
    for note in run.notes:
        log.info(note)
    s: LatentConfig = run.cfg.latent
    out = a.out or Path(a.run) / "latent"
    errors.make_dir(out)
    errors.check_writable(out)
    for p in (*checkpoint.remove_leftovers(out), *checkpoint.remove_leftovers(out / "checkpoints")):
        log.info(f"removed {p} (left by an interrupted write)")
    _check_settings(out, s, run)
    codes = codes_of(run, out, logs.bars(a.no_progress)).to(run.device)
    if len(codes) < 2:
        raise ConfigError(f"train_latent: {len(codes)} training code(s); need at least 2")
    flat = codes.reshape(len(codes), -1).float()
    model = LatentDDIM(codes.shape[1:], flat.mean(0), flat.std(0), s).to(run.device)
    opt = torch.optim.AdamW(model.net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator(device=run.device).manual_seed(s.seed)
    t = _Trainer(model, opt, gen, out, logs.bars(a.no_progress))
    start = t.resume(run.device)

    def batches() -> Iterator[dict]:
        while True:
            yield {
                "codes": codes[
                    torch.randint(len(codes), (s.batch_size,), generator=gen, device=run.device)
                ]
            }

    def train_step(batch: dict, step: int) -> tuple[dict, int]:
        loss = model.loss(batch["codes"], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(model.ema, model.net, warmup_decay(s.ema_decay, step))
        return {"loss": loss.detach()}, s.batch_size

    # the run's own sinks (train.loggers), under the latent folder
    t.tracker = tracking.Tracker(out, run.cfg.train.loggers, dataclasses.asdict(s), start)
    for note in t.tracker.notes:
        log.info(f"note: {note}")
    jobs = [
        hooks.Metrics(t, start, s.max_steps, LOG_EVERY, ("loss",), lambda: s.lr),
        hooks.Checkpoints(s.ckpt_every, s.max_steps),
    ]
    t.last_checkpoint = None
    try:
        end = (
            loop.run(t, batches(), train_step, jobs, start, s.max_steps)
            if start < s.max_steps
            else None
        )
    finally:
        t.bar.close()
        t.tracker.close()
        phases.timing(False)
    if end is not None and end.signum is not None:
        log.info(
            f"stopped by {signal.Signals(end.signum).name} at step {end.step}; "
            f"checkpoint {t.last_checkpoint}; the same command resumes from it"
        )
        return 128 + end.signum
    step = end.step if end else start
    final = {
        **model.state(),
        "source": {"checkpoint": str(run.checkpoint), "step": run.step},
        "step": step,
    }
    checkpoint.atomic_write(out / "latent.pt", lambda f: torch.save(final, f), "latent model")
    log.info(f"latent DDIM: {step} steps, written to {out / 'latent.pt'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    return errors.run(lambda: train(a))


if __name__ == "__main__":
    sys.exit(main())
