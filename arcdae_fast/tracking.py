"""Where a run's numbers go: one `Tracker` that the trainer, `train_latent` and in-training
evaluation all write through, fanning out to the sinks `train.loggers` names.

- `jsonl` (always on): RUN/metrics.jsonl, one JSON object per line. A resume cuts it back to
  the checkpoint's step, and a torn last line (a crash or a full disk mid-write) is dropped
  with a note instead of failing the resume.
- `tensorboard`: RUN/tensorboard/ through `torch.utils.tensorboard` (the `tensorboard`
  package: `pip install arcdae_fast[tensorboard]`). Scalars under their metric names, the
  reconstruction grids as images, the config as text and hyperparameters.
- `wandb`: Weights & Biases, its run directory under RUN/wandb/, offline unless WANDB_MODE
  says otherwise (`pip install arcdae_fast[wandb]`; `wandb sync RUN/wandb/offline-run-*`
  uploads later). The run id is kept in RUN/wandb/run_id so a resume continues the same run.

Only rank 0 tracks under torchrun (the trainer builds no Tracker elsewhere). A sink whose
package is missing is a one-line error naming the extra, raised before training starts.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write
from .errors import UserError, doing

SINKS = ("jsonl", "tensorboard", "wandb")


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-4}} -> {"train.lr": 1e-4}; lists become strings (hparams)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def repair_jsonl(path: Path, keep_step: int | None = None) -> str:
    """Cut metrics.jsonl back to its complete lines (and, with keep_step, to lines of steps
    <= keep_step); returns a note when a torn line was dropped, else ''."""
    if not path.exists():
        return ""
    keep, torn = [], 0
    for ln in path.read_text(errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            torn += 1
            continue
        if keep_step is None or rec.get("step", 0) <= keep_step:
            keep.append(ln)
    atomic_write(path, lambda f: f.write("".join(k + "\n" for k in keep).encode()), "the metrics")
    return f"dropped {torn} incomplete line(s) of {path} (a write cut short)" if torn else ""


class _Jsonl:
    def __init__(self, out: Path, name: str):
        self.path = out / name
        with doing("open", self.path):
            self.f = open(self.path, "a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with doing("write", self.path):
            self.f.write(json.dumps({"step": step, **values}) + "\n")
            self.f.flush()

    def image(self, step: int, tag: str, path: Path) -> None:
        pass

    def close(self) -> None:
        self.f.close()


class _TensorBoard:
    def __init__(self, out: Path, start: int, config: dict[str, Any]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise UserError(
                f"train.loggers: tensorboard needs the tensorboard package ({e}); "
                "pip install 'arcdae_fast[tensorboard]'"
            ) from None
        # purge_step: events of steps after the resumed checkpoint are hidden
        self.w = SummaryWriter(str(out / "tensorboard"), purge_step=start or None)
        if not start:
            self.w.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```", 0)
            hp = {k: v for k, v in flatten(config).items() if v is not None}
            self.w.add_hparams(hp, {}, run_name=".")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def image(self, step: int, tag: str, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            self.w.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")
        self.w.flush()

    def close(self) -> None:
        self.w.close()


class _Wandb:
    def __init__(self, out: Path, config: dict[str, Any], name: str):
        try:
            import wandb
        except ImportError as e:
            raise UserError(
                f"train.loggers: wandb needs the wandb package ({e}); "
                "pip install 'arcdae_fast[wandb]'"
            ) from None
        self.wandb = wandb
        folder = out / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        atomic_write(id_file, lambda f: f.write(run_id.encode()), "the W&B run id")
        self.run = wandb.init(
            dir=str(out),
            id=run_id,
            resume="allow",
            name=name,
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True),
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def image(self, step: int, tag: str, path: Path) -> None:
        self.run.log({tag: self.wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


class Tracker:
    """The sinks of one run (`loggers` of SINKS; jsonl always). `start`: the step resumed
    from (0: a new run); `name`: the jsonl file (metrics.jsonl; train_latent's its own)."""

    def __init__(
        self,
        out: Path,
        loggers: tuple[str, ...] | list[str],
        config: dict[str, Any],
        start: int = 0,
        name: str = "metrics.jsonl",
    ):
        bad = [s for s in loggers if s not in SINKS]
        if bad:
            raise UserError(f"train.loggers: unknown {bad[0]!r}; choose from {', '.join(SINKS)}")
        self.notes: list[str] = []
        out = Path(out)
        note = repair_jsonl(out / name, start)
        if note:
            self.notes.append(note)
        self.sinks: list[Any] = [_Jsonl(out, name)]
        try:
            if "tensorboard" in loggers:
                self.sinks.append(_TensorBoard(out, start, config))
            if "wandb" in loggers:
                self.sinks.append(_Wandb(out, config, out.name))
        except BaseException:
            self.close()
            raise

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for s in self.sinks:
            s.scalars(step, values)

    def image(self, step: int, tag: str, path: Path) -> None:
        for s in self.sinks:
            s.image(step, tag, path)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
