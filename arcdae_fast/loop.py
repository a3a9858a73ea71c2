"""The training loop that both trainers run: `train.py` (a method) and `train_latent.py`
(DiffAE's latent DDIM). Per batch: the hooks see it, the step trains on it, the step counter
advances, the hooks see the step's output; the loop ends at `max_steps`, when the batches run
out, or after the step during which SIGINT/SIGTERM arrived (the hooks save a checkpoint: a
hook reads `t.stop`). What each trainer does besides the step is a hook (arcdae_fast/hooks.py).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any

from .errors import Aborted

log = logging.getLogger(__spec__.name)


class Hook:
    def on_batch(self, t: Any, batch: dict) -> None:
        """Every batch the loader gives, a skipped step's included."""

    def after_step(self, t: Any, step: int, out: dict, images: int) -> None:
        """After step `step` (counted from 1) trained on `images` images on this rank."""

    def at_end(self, t: Any, step: int) -> None:
        """After the last step (not when a signal stopped the run)."""


class Signals:
    """First SIGINT/SIGTERM: stop after the current step (checkpoint saved). Second: abort."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Aborted(
                signum,
                f"aborted at once by a second {signal.Signals(signum).name}; the checkpoints "
                "written so far are intact",
            )
        self.signum = signum
        log.warning(f"received {signal.Signals(signum).name}: saving a checkpoint after this step")

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclasses.dataclass
class Ended:
    step: int  # the steps done, counted from the run's start
    signum: int | None  # the signal that stopped the run, or None: it ran to its end


Step = Callable[[dict, int], "tuple[dict, int] | None"]


def run(
    t: Any,
    batches: Iterable[dict],
    train_step: Step,
    hooks: list[Hook],
    start: int,
    max_steps: int,
    agree: Callable[[bool], bool] = bool,
) -> Ended:
    """`train_step(batch, step)` trains one step and gives (its output, images trained), or
    None for a step it skipped (counted, unseen by the hooks). `agree` makes the stop decision
    the same on every rank of a data-parallel run. Sets `t.stop` before the hooks run."""
    step = start
    t.stop = False
    with Signals() as sig:
        for batch in batches:
            for h in hooks:
                h.on_batch(t, batch)
            done = train_step(batch, step)
            step += 1
            if done is None:
                continue
            out, images = done
            t.stop = agree(sig.signum is not None)
            for h in hooks:
                h.after_step(t, step, out, images)
            if t.stop:  # a rank that was not signalled stops with its peers
                return Ended(step, sig.signum or signal.SIGTERM)
            if step >= max_steps:
                break
    for h in hooks:
        h.at_end(t, step)
    return Ended(step, None)
