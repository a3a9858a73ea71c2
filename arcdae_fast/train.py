"""`python -m arcdae_fast.train --config quickstart.yaml --out runs/q [--max-steps N] [k=v ...]`

Trains the method the config names (`method.name`: arcdae, diffae, ...). Writes into --out:
config.yaml (the resolved config), metrics.jsonl (one JSON line per logged step: the
method's own loss terms), samples/recon_XXXXXXXX.png and checkpoints/ckpt_XXXXXXXX.pt
(atomic). Started again with the same --out it resumes from the newest checkpoint and
continues exactly where it stopped. SIGINT/SIGTERM finish the current step, save a checkpoint
and exit (130/143). A non-finite loss stops the run (exit 1) without touching the checkpoints.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from . import checkpoint, distributed, errors, hooks, loop, phases, session, tracking
from . import log as logs
from .config.load import changed_keys, diff_keys, from_dict, load_config
from .config.schema import Config, ConfigError
from .data.datasets import first_readable
from .data.loader import model_input
from .errors import check_writable, make_dir
from .legacy import upgrade_state
from .step import EagerStep, NonFiniteLoss
from .viz import reconstruction_grid

log = logging.getLogger(__spec__.name)  # not __name__: "__main__" under python -m


class _ToEager(Exception):
    """A compiled run's non-finite loss under train.on_nonfinite=eager: restart eager."""


def checkpoint_bytes(s: session.Session) -> int:
    """About how large a checkpoint of this run is: the method's and the EMA's tensors and
    AdamW's two moments per trained parameter, plus 5%."""

    def size(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    params = [p for g in s.optimizer.param_groups for p in g["params"]]
    total = size(s.method.state_dict().values()) + size(s.ema.state_dict().values())
    return int(1.05 * (total + 2 * size(params))) + (1 << 16)


class Trainer:
    def __init__(self, cfg: Config, out: Path, progress: bool = True):
        logs.ensure()
        self.cfg, self.out = cfg, Path(out)
        self.dist = distributed.from_env()  # torchrun
        self.main = self.dist is None or self.dist.main  # rank 0 logs and checkpoints
        self.progress = logs.bars(not progress) and self.main
        self.world = 1 if self.dist is None else self.dist.world
        self.ckpt_dir = self.out / "checkpoints"
        self._eval_warned: set[str] = set()

    def _resume(self) -> int:
        found = checkpoint.load_latest(self.ckpt_dir, map_location=self.s.device)
        if found is None:
            return 0
        step, state, path = found
        state = upgrade_state(state)
        # keys added since the run was written take their defaults (which keep the old meaning)
        stored = from_dict(state["config"])
        changed = changed_keys(stored, self.cfg, allowed=("nothing",))
        if self.cfg.train.lr_schedule != "constant" and "train.max_steps" in diff_keys(
            stored.to_dict(), self.cfg.to_dict()
        ):
            changed.append("train.max_steps")  # where the learning-rate decay ends
        if changed:
            why = (
                " (with train.lr_schedule="
                f"{self.cfg.train.lr_schedule} train.max_steps is where the decay ends)"
                if "train.max_steps" in changed
                else ""
            )
            raise ConfigError(
                f"config: {self.out} holds a run with a different configuration "
                f"(differs in: {', '.join(changed)}){why}; resume it with the same "
                "config or choose another --out"
            )
        self.s.load_state(state)
        if state.get("optimizer") is None and "sharded_dir" not in state:
            self._say(f"{path} has no optimizer state (a converted checkpoint): AdamW starts fresh")
        self._say(f"resuming from {path} (step {step})")
        return step

    def _prepare_folders(self) -> None:
        """Before anything is built: the run folder and checkpoints/ exist and are writable;
        temp files of interrupted writes are gone."""
        make_dir(self.out, "run folder")
        make_dir(self.ckpt_dir, "checkpoints folder")
        for folder in (self.out, self.ckpt_dir):
            for p in checkpoint.remove_leftovers(folder):
                self._say(f"removed {p} (left by an interrupted write)")
        check_writable(self.ckpt_dir)

    def _check_space(self) -> None:
        """Room for at least one checkpoint of this run (a warning below keep + 1)."""
        need = checkpoint_bytes(self.s)
        free = check_writable(self.ckpt_dir, need, "one checkpoint of this run")
        keep = self.cfg.train.keep_checkpoints
        if free < need * (keep + 1):
            self._say(
                f"warning: {self.ckpt_dir} has room for {free // need} checkpoint(s) of about "
                f"{need / 1e6:.0f} MB; train.keep_checkpoints={keep} keeps {keep} plus the one "
                "being written"
            )

    def save(self, step: int) -> Path | None:
        """Every rank calls it (FSDP: every rank writes its shards; else rank 0 writes)."""
        if self.dist is not None and not self.s.sharded:
            distributed.check_replicas(self.s.method, self.s.device)
        return self.s.save(self.ckpt_dir, step, self.cfg.train.keep_checkpoints)

    def grid(self, step: int, fixed: torch.Tensor, nets: Any) -> None:
        path = self.out / "samples" / f"recon_{step:08d}.png"
        reconstruction_grid(
            path,
            self.s.method,
            fixed,
            nets=nets,
            steps=self.cfg.train.sample_steps,
            seed=self.cfg.train.seed,
        )
        self.tracker.image(step, "reconstruction", path)

    def run(self) -> int:
        fresh = self.main and not self.out.exists()
        ok = False
        try:
            try:
                rc = self._run()
            except _ToEager:  # from the last checkpoint, with the eager step from now on
                self.cfg = copy.copy(self.cfg)
                self.cfg.train = dataclasses.replace(self.cfg.train, step="eager")
                rc = self._run()
            ok = rc == 0
            return rc
        except errors.UserError as e:
            if self.dist is not None:
                distributed.report_failure(self.dist.rank, str(e))
            if fresh:  # a run that never started leaves no empty folder behind
                for folder in (self.ckpt_dir, self.out):
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if self.dist is None:
                raise
            if not distributed.peer_lost(e):  # this rank's own failure: tell the others
                distributed.report_failure(self.dist.rank, f"{type(e).__name__}: {first}")
                raise
            raise self._peer_lost(e, first) from e
        finally:
            if getattr(self, "s", None) is not None:
                self.s.step.release_ddp()
            distributed.finish(ok)

    def _peer_lost(self, e: BaseException, first: str) -> errors.PeerLost:
        """A collective failed here: name the rank that failed and its error when it said
        so; otherwise it died, hung or lost its network."""
        last = checkpoint.list_checkpoints(self.ckpt_dir)
        where = f"the newest checkpoint is {last[-1][1]}" if last else "no checkpoint yet"
        resume = f"{where}, and the same command resumes from it"
        told = [(r, w) for r, w in distributed.failures(self.world) if r != self.dist.rank]
        if told:
            named = "; ".join(f"rank {r} failed: {w}" for r, w in told)
            return errors.PeerLost(f"rank {self.dist.rank}: {named}; {resume}")
        return errors.PeerLost(
            f"rank {self.dist.rank}: another rank stopped, hung past "
            f"train.dist_timeout_s={self.cfg.train.dist_timeout_s:g} or lost its network "
            f"({(first or type(e).__name__)[:300]}); {resume} "
            "(torchrun --max-restarts=K does so by itself)"
        )

    def _run(self) -> int:
        cfg, tc = self.cfg, self.cfg.train
        if tc.eval_every:
            from .eval import need_extra, registry

            need_extra("train.eval_every")
            bad = registry.unknown(cfg.eval.during_training)
            if bad:
                raise ConfigError(
                    f"config: eval.during_training has unknown suite {bad!r}; suites: "
                    f"{', '.join(registry.load())}"
                )
        if self.main:
            self._prepare_folders()
        self.s = session.build(cfg, dist=self.dist)
        for note in cfg.notes:
            self._say(note)
        if self.main:
            self._check_space()
        start = self._resume()
        if self.dist is not None and not self.s.sharded:
            distributed.broadcast_state(self.s.method, self.s.ema)  # rank 0's weights everywhere
        if self.main:
            checkpoint.atomic_write(
                self.out / "config.yaml",
                lambda f: f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()),
                "the run's config",
            )
        if start >= tc.max_steps:
            self._say(
                f"{self.out} is already at step {start} >= train.max_steps={tc.max_steps}; "
                "nothing to do"
            )
            return 0
        loader, how = self.s.loader(start)
        dataset = self.s.dataset
        fixed = first_readable(dataset, 8)["image"]
        fixed = fixed.to(self.s.device)
        ranks = "" if self.dist is None else f" x {self.world} ranks"
        self._say(
            f"training {len(dataset)} images at {cfg.data.resolution}px on {self.s.device} "
            f"(input pipeline: {how}; method: {cfg.method.name}; step: {self.s.step_kind} "
            f"({self.s.step_reason}), {self.s.precision}{ranks}) -> {self.out}"
        )
        self.tracker = None
        if self.main:
            self.tracker = tracking.Tracker(self.out, tc.loggers, cfg.to_dict(), start)
        try:
            for note in self.tracker.notes if self.tracker else ():
                self._say(f"note: {note}")
            return self._loop(self.s.step, loader, start, fixed)
        finally:
            phases.timing(False)
            if self.tracker:
                self.tracker.close()

    def evaluate(self, step: int, nets: Any) -> dict[str, float]:
        """eval.during_training on the EMA weights, on subsets (eval.during_training_images
        per split), reported on the validation split; the training's random state is left as
        it was (the bit-exact resume holds)."""
        from .eval import registry
        from .eval.context import Evaluator

        ec, dev = self.cfg.eval, self.s.device
        devices = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            ev = Evaluator(
                self.cfg,
                self.s.method,
                nets,
                dev,
                split="valid",
                max_images=ec.during_training_images,
                recon_steps=ec.during_training_recon_steps,
            )
            results = registry.run(ev, ec.during_training)
        for name, r in results.items():
            if "skipped" in r and name not in self._eval_warned:
                self._eval_warned.add(name)
                self._say(f"warning: train-time eval {name} skipped: {r['skipped']}")
        return registry.flat(results)

    def _nonfinite(self, e: NonFiniteLoss) -> int:
        """A non-finite loss (raised before any weight changed): one line saying which step and
        precision ran and what to do; under train.on_nonfinite=eager a compiled run goes on
        with the eager step from its last checkpoint (raises _ToEager)."""
        last = checkpoint.list_checkpoints(self.ckpt_dir)
        where = (
            f"the last good checkpoint is {last[-1][1]} (step {last[-1][0]})"
            if last
            else "no checkpoint was written before it"
        )
        tc = self.cfg.train
        ran = f"{self.s.step_kind} {self.s.precision} step"
        if self.s.step_kind == "compiled":
            if tc.on_nonfinite == "eager":
                self._say(
                    f"warning: {e} in the {ran}; train.on_nonfinite=eager: going on with the "
                    f"eager step from the last checkpoint ({where})"
                )
                raise _ToEager
            self._say(
                f"error: {e} in the {ran}. Stopping; {where}. The eager step: rerun the same "
                "command with train.step=eager (it resumes from that checkpoint), or set "
                "train.on_nonfinite=eager"
            )
        else:
            self._say(
                f"error: {e} in the {ran}. Stopping; {where}. Try a lower train.lr or "
                "train.grad_clip."
            )
        return 1

    def _say(self, msg: str) -> None:
        if self.main:
            log.info(msg)

    def _agree(self, flag: bool) -> bool:
        """Data parallel: true on every rank when true on any (single process: the flag)."""
        return flag if self.dist is None else distributed.any_rank(flag, self.s.device)

    def nets(self, step: int) -> Any:
        """The evaluation weights at `step`, built once for the hooks that ask (FSDP: every
        rank must ask)."""
        if self._nets[0] != step:
            self._nets = (step, self.s.eval_nets())
        return self._nets[1]

    def _loop(self, step_fn: EagerStep, loader: Any, start: int, fixed: torch.Tensor) -> int:
        """The step; everything else is a hook (arcdae_fast/hooks.py) run by arcdae_fast/loop.py."""
        tc = self.cfg.train
        per_rank = tc.batch_size // self.world
        terms = (*self.s.method.terms(), "grad_norm")
        jobs = [
            hooks.Metrics(self, start, tc.max_steps, tc.log_every, terms, self._lr),
            hooks.Evaluation(),
            hooks.Grids(fixed),
            hooks.Checkpoints(tc.ckpt_every, tc.max_steps),
        ]
        self.last_checkpoint, self._nets = None, (None, None)

        def train_step(batch: dict, step: int) -> tuple[dict, int] | None:
            self._nets = (None, None)  # the last step's evaluation weights
            rows = batch["image"].shape[0] if "image" in batch else 0
            # data parallel: the gathered InfoNCE needs every rank's full share
            if self._agree(rows == 0 or (self.dist is not None and rows != per_rank)):
                self._say(
                    f"warning: unreadable images left the batch of step {step} "
                    f"{'empty' if self.dist is None else 'short on some rank'}; "
                    "skipping the step"
                )
                return None
            x0 = model_input(batch["image"], self.s.device, self.cfg.data.channels_last)
            return step_fn(x0, self.s.inputs(x0, step), step), x0.shape[0]

        try:
            end = loop.run(self, loader, train_step, jobs, start, tc.max_steps, self._agree)
        except NonFiniteLoss as e:
            return self._nonfinite(e)
        if end.signum is not None:
            self.bar.close()
            self._say(
                f"stopped by {signal.Signals(end.signum).name} at step {end.step}; "
                f"checkpoint {self.last_checkpoint}"
            )
            return 128 + end.signum
        self._say(f"done: {end.step} steps; checkpoint {self.last_checkpoint}")
        return 0

    def _lr(self) -> float:
        return self.s.scheduler.get_last_lr()[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m arcdae_fast.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        required=True,
        help="a YAML file, or a packaged preset (quickstart.yaml, ffhq.yaml, ...)",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--max-steps", type=int, default=None, help="same as train.max_steps=N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    logs.add_flags(p)
    checkpoint.add_trust_flag(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="override any config key, at any depth (model.denoiser.channel_mult=[1,2]); "
        "`python -m arcdae_fast.info --keys [METHOD]` lists them all",
    )
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> int:
        overrides = list(args.overrides)
        if args.max_steps is not None:
            overrides.append(f"train.max_steps={args.max_steps}")
        cfg = load_config(args.config, overrides)
        out = Path(args.out or Path("runs") / Path(args.config).stem)
        return Trainer(cfg, out, progress=not args.no_progress).run()

    rc = errors.run(work)
    if distributed.from_env() is not None:  # torchrun: this rank ends, whatever holds it
        distributed.exit_guard(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
