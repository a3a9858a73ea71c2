"""The training loop's jobs besides the step, one small class each (arcdae_fast/loop.py calls
them in the order a trainer lists them after every step): `Metrics` (the loss window, img/s,
learning rate, skipped images and phase timings to the tracker, the progress bar or a log
line), `Evaluation` (eval.during_training every train.eval_every steps), `Grids` (the EMA's
reconstruction grid every train.sample_every steps and at the end), `Checkpoints` (every
`every` steps, at the last step and when a signal stops the run). train.py uses all four,
train_latent.py Metrics and Checkpoints.

A hook sees the trainer (`t`: its tracker, rank, `save`; train.py's also its config and
session) and the step just done. The
evaluation weights (`t.nets(step)`) are built once per step for whichever hooks ask (under
FSDP every rank takes part, so hooks ask on every rank and act on the main one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from . import phases
from .loop import Hook

log = logging.getLogger(__spec__.name)


class Metrics(Hook):
    """The mean of each loss term over the last `log_every` steps, img/s, lr, skipped images
    so far and the host time per phase; to the tracker (rank 0), the bar's postfix, and
    without a bar (a log file) a line every 30 s. Sets `t.bar`, the progress bar."""

    def __init__(
        self,
        t: Any,
        start: int,
        total: int,
        log_every: int,
        terms: Sequence[str],
        lr: Callable[[], float],
    ):
        self.total, self.log_every, self.terms, self.lr = total, log_every, tuple(terms), lr
        t.bar = tqdm(
            total=total,
            initial=start,
            disable=not t.progress,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5,
        )
        phases.timing(t.main)
        self.window: dict[str, float] = {}
        self.steps, self.images, self.skipped = 0, 0, 0
        self.t0, self.said = time.perf_counter(), time.monotonic()

    def on_batch(self, t: Any, batch: dict) -> None:
        self.skipped += batch.get("skipped", 0)

    def after_step(self, t: Any, step: int, out: dict, images: int) -> None:
        for k in self.terms:
            if k in out:
                self.window[k] = self.window.get(k, 0.0) + float(out[k])
        self.steps, self.images = self.steps + 1, self.images + images * t.world
        if t.main and (step % self.log_every == 0 or step == self.total):
            self.write(t, step)
        t.bar.update(1)

    def write(self, t: Any, step: int) -> None:
        n = self.steps
        phase_ms = {f"ms_{k}": 1e3 * v / n for k, v in phases.take().items()}
        rec = {
            **{k: v / n for k, v in self.window.items()},
            "img_per_s": self.images / (time.perf_counter() - self.t0),
            "lr": self.lr(),
            "skipped_images": self.skipped,
            **phase_ms,  # host time per phase of a step (CUDA: issue time)
        }
        t.tracker.scalars(step, rec)
        t.bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['img_per_s']:.1f}")
        if not t.progress and time.monotonic() - self.said >= 30 or step == self.total:
            self.said = time.monotonic()  # no bar (a log file): a line per 30 s
            log.info(
                f"step {step}/{self.total}: loss {rec['loss']:.4f}, {rec['img_per_s']:.1f} img/s"
            )
        self.window, self.steps, self.images = {}, 0, 0
        self.t0 = time.perf_counter()

    def at_end(self, t: Any, step: int) -> None:
        t.bar.close()


class Evaluation(Hook):
    """eval.during_training on the EMA weights every train.eval_every steps (rank 0)."""

    def after_step(self, t: Any, step: int, out: dict, images: int) -> None:
        every = t.cfg.train.eval_every
        if every and step % every == 0:
            nets = t.nets(step)
            if t.main:
                rec = t.evaluate(step, nets)
                t.tracker.scalars(step, rec)
                if "eval_probe_ap" in rec:
                    t.bar.set_postfix(ap=f"{rec['eval_probe_ap']:.3f}")


class Grids(Hook):
    """The reconstruction grid of the fixed images every train.sample_every steps, and at
    the end when the last step was not one of those."""

    def __init__(self, fixed: Any):
        self.fixed = fixed

    def after_step(self, t: Any, step: int, out: dict, images: int) -> None:
        every = t.cfg.train.sample_every
        if every and step % every == 0:
            self.draw(t, step)

    def draw(self, t: Any, step: int) -> None:
        nets = t.nets(step)  # FSDP: all ranks
        if t.main:
            t.grid(step, self.fixed, nets)

    def at_end(self, t: Any, step: int) -> None:
        every = t.cfg.train.sample_every
        if every and step % every:
            self.draw(t, step)


class Checkpoints(Hook):
    """`t.save(step)` every `every` steps, at step `last` and when the run is stopping
    (t.stop); the newest path in t.last_checkpoint."""

    def __init__(self, every: int, last: int):
        self.every, self.last = every, last

    def after_step(self, t: Any, step: int, out: dict, images: int) -> None:
        if step >= self.last or step % self.every == 0 or t.stop:
            t.last_checkpoint = t.save(step)
