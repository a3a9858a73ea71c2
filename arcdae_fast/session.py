"""Builds a run from a config, in one place that `train`, `profile`, `bench/bench_step.py` (and
evaluation) share: the device and threads, the op backends (`ops.backend`), seeding, the data,
the method, the evaluation EMA, the optimizer and LR schedule, the training step, and each
step's random inputs; also the checkpoint state of the run.

    s = session.build(cfg)                      # data="required" | "optional" | "none"
    next_batch, note = s.batches()              # the dataset's batches, or random images
    x0 = next_batch(); out = s.step(x0, s.inputs(x0, step), step)
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint, distributed, fsdp, methods, weights
from .config.load import changed_keys, from_dict, with_overrides
from .config.schema import Config, ConfigError
from .data.datasets import DataError, ImageDataset, first_readable
from .data.loader import build_dataset, make_loader, model_input
from .ema import frozen_copy
from .errors import doing
from .malloc import keep_freed_memory
from .methods import Method, RandomInputs
from .nn import attention
from .ops import _backends
from .step import CompiledStep, EagerStep, build_step, optimizer_for, uses_bf16

STATE_FORMAT = 2  # checkpoints: 2 = method registry (1: arcdae_fast.objective, pre-methods)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "config: train.device='cuda' but CUDA is not available here "
            "(use train.device=auto or cpu)"
        )
    return torch.device(name)


def step_seed(seed: int, step: int) -> int:
    """Seed of all randomness of one step (timesteps, noise, augmentation, dropout)."""
    return (seed * 1_000_003 + step * 7_919 + 12_345) % (2**63 - 1)


def apply_backend(cfg: Config, device: torch.device) -> None:
    """ops.backend as the process-level op backend choice; it and ARCDAE_FAST_BACKEND
    validated, also against the device (a forced backend that cannot run here is an error
    now, not at the op's first call)."""
    try:
        _backends.env_spec()
        _backends.set_backend(cfg.ops.backend, "ops.backend")
        _backends.check_runnable(device)
        bf16 = cfg.train.precision == "bf16" and device.type == "cuda"
        attention.check(cfg.model.attn_backend, device, torch.bfloat16 if bf16 else torch.float32)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"config: {e}") from None


@dataclass
class Session:
    cfg: Config
    device: torch.device
    method: Method
    ema: nn.ModuleDict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: EagerStep
    step_kind: str  # "eager" | "compiled"
    step_reason: str
    dataset: ImageDataset | None = None
    data_note: str = ""  # why there is no dataset (data="optional")
    dist: distributed.Dist | None = None
    _pool: list[torch.Tensor] = field(default_factory=list, repr=False)
    _ema_full: nn.ModuleDict | None = field(default=None, repr=False)  # FSDP, rank 0

    @property
    def sharded(self) -> bool:
        """FSDP: the networks, the optimizer state and the EMA hold this rank's shards."""
        return self.dist is not None and self.cfg.train.parallel == "fsdp"

    @property
    def world(self) -> int:
        return 1 if self.dist is None else self.dist.world

    @property
    def rank(self) -> int:
        return 0 if self.dist is None else self.dist.rank

    @property
    def precision(self) -> str:
        return "bf16 autocast" if uses_bf16(self.device, self.cfg.train.precision) else "fp32"

    def inputs(self, x0: torch.Tensor, step: int) -> RandomInputs:
        """The step's random inputs, a function of (train.seed, step); data parallel: drawn
        for the global batch, this rank's rows kept, so N ranks see what one process would
        (dropout masks differ by rank)."""
        seed = step_seed(self.cfg.train.seed, step)
        torch.manual_seed((seed + self.rank) % (2**63 - 1))  # dropout
        gen = torch.Generator(device=self.device).manual_seed(seed)
        if self.dist is None:
            return self.method.draw_inputs(x0, gen)
        b = x0.shape[0]
        lo = self.rank * b
        return self.method.draw_inputs(x0, gen, batch=b * self.world).rows(lo, lo + b)

    def loader(self, start_step: int = 0) -> tuple[Any, str]:
        """This rank's batches from step start_step on, and which pipeline delivers them."""
        tc = self.cfg.train
        return make_loader(
            self.dataset,
            self.cfg.data,
            tc.batch_size // self.world,
            seed=tc.seed,
            start_step=start_step,
            rank=self.rank,
            world_size=self.world,
            device=self.device,
        )

    def batches(self, pool: int = 4) -> tuple[Callable[[], torch.Tensor], str]:
        """next_batch() -> model input (B, C, R, R), and where the images come from: the
        dataset's pipeline, or (no dataset) `pool` random batches kept on the device."""
        cfg, bs = self.cfg, self.cfg.train.batch_size
        if self.dataset is not None:
            loader, how = self.loader()
            it = iter(loader)

            def real() -> torch.Tensor:
                batch = next(it)
                while "image" not in batch:  # every image unreadable: the next batch
                    batch = next(it)
                return model_input(batch["image"], self.device, cfg.data.channels_last)

            return real, f"{cfg.data.dataset}, {len(self.dataset)} images ({how})"
        if not self._pool:
            g = torch.Generator(device=self.device).manual_seed(cfg.train.seed)
            res = cfg.data.resolution
            shape = (bs, cfg.data.channels, res, res)
            self._pool = [
                torch.rand(shape, generator=g, device=self.device) * 2 - 1 for _ in range(pool)
            ]
            if cfg.data.channels_last:
                self._pool = [x.contiguous(memory_format=torch.channels_last) for x in self._pool]
        cycle = itertools.cycle(self._pool)
        res = cfg.data.resolution
        return lambda: next(cycle), f"synthetic random images at {res} px ({self.data_note})"

    def eval_nets(self) -> nn.Module | None:
        """The evaluation EMA as full modules (sample grids, evaluation). FSDP: every rank
        must call it (it all-gathers the shards); rank 0 gets a full copy, the others None."""
        if not self.sharded:
            return self.ema
        full = fsdp.gather(self.ema)
        if self._ema_full is None:
            return None
        self._ema_full.load_state_dict(full)
        return self._ema_full

    # ---- checkpoints -------------------------------------------------------------------------
    def state(self, step: int) -> dict[str, Any]:
        """The checkpoint as one dict of full tensors (one process, DDP)."""
        if self.sharded:
            raise ValueError("an FSDP session's state is sharded: use Session.save")
        return run_state(self.cfg, self.method, self.ema, self.optimizer, self.scheduler, step)

    def save(self, folder: Path, step: int, keep: int) -> Path | None:
        """Write a checkpoint: FSDP, a sharded .dcp directory (every rank calls this); else
        one .pt file from rank 0 (the others return None)."""
        if self.sharded:
            meta = run_state(self.cfg, None, None, None, self.scheduler, step)
            return checkpoint.save_sharded(folder, step, self._dcp_tensors(), meta, keep)
        if self.rank:
            return None
        state = self.state(step)
        # the weights first: the .pt, written last, is what makes the checkpoint exist
        side = weights.save_checkpoint_weights(checkpoint.path_for(folder, step), state)
        try:
            return checkpoint.save(folder, step, state, keep)
        except BaseException:
            side.unlink(missing_ok=True)  # no weights without their checkpoint
            raise

    def load_state(self, state: dict[str, Any]) -> None:
        """Weights, EMA, and (when present) optimizer and scheduler state, from any
        checkpoint on any number of ranks: a .pt's full tensors (FSDP: each rank keeps its
        shards), or a .dcp directory (`sharded_dir`, from checkpoint.load_latest; read
        resharded to this run's ranks)."""
        if "sharded_dir" in state:
            self._load_dcp(Path(state["sharded_dir"]))
        else:
            self._load_full(state)
        if state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def _dcp_tensors(self) -> dict[str, Any]:
        """What a .dcp checkpoint holds: the method's and the EMA's state dicts (DTensors under
        FSDP) and AdamW's state keyed by parameter name; also the templates it loads into."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return {
            "model": self.method.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": get_optimizer_state_dict(self.method.trainable(), self.optimizer),
        }

    def _load_dcp(self, path: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        tensors = self._dcp_tensors()
        with doing("read the checkpoint", path):
            dcp.load(tensors, storage_reader=dcp.FileSystemReader(path))
        self.method.load_state_dict(tensors["model"])
        self.ema.load_state_dict(tensors["ema"])
        set_optimizer_state_dict(self.method.trainable(), self.optimizer, tensors["optimizer"])

    def _load_full(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        nets = self.method.trainable()
        by_name = state.get("optimizer_fqn")  # checkpoint.read_full of a .dcp
        if not self.sharded:
            self.method.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            if state.get("optimizer") is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            elif by_name is not None:
                set_optimizer_state_dict(nets, self.optimizer, by_name)
            return
        full = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.method, state["model"], options=full)
        set_model_state_dict(self.ema, state["ema"], options=full)
        if state.get("optimizer") is not None:
            names = [n for n, p in nets.named_parameters() if p.requires_grad]
            by_name = optimizer_by_name(state["optimizer"], names)
        if by_name is not None:
            set_optimizer_state_dict(nets, self.optimizer, by_name, options=full)

    def fork(self, **train: Any) -> Session:
        """Another session on a copy of this one's current weights, with train.* keys changed
        (e.g. step="eager", precision="fp32"); shares the dataset. Not under FSDP."""
        if self.sharded:
            raise ValueError("Session.fork: an FSDP session's networks are sharded")
        cfg = copy.copy(self.cfg)
        cfg.train = dataclasses.replace(self.cfg.train, **train)
        method = copy.deepcopy(self.method)
        return _assemble(cfg, self.device, method, self.dist, self.dataset, self.data_note)


def run_state(
    cfg: Config,
    method: Method | None,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    step: int,
) -> dict[str, Any]:
    """What a checkpoint holds (optimizer None: the trainer starts AdamW fresh; method and
    ema None: the meta of a sharded checkpoint, whose tensors are stored apart)."""
    out = {
        "format": STATE_FORMAT,
        "step": step,
        "method": cfg.method.name,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "config": cfg.to_dict(),
        "torch_version": str(torch.__version__),
    }
    if method is not None:
        out.update(model=method.state_dict(), ema=ema.state_dict())
    return out


def optimizer_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """torch's optimizer state dict (parameters numbered in the optimizer's order) keyed by
    parameter name instead, as torch.distributed.checkpoint.state_dict takes it."""
    return {
        "state": {names[i]: v for i, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]
        ],
    }


def _assemble(
    cfg: Config,
    device: torch.device,
    method: Method,
    dist: distributed.Dist | None,
    dataset: ImageDataset | None,
    data_note: str,
) -> Session:
    tc = cfg.train
    ema = frozen_copy(method.trainable())
    ema_full = None
    if dist is not None and tc.parallel == "fsdp":  # before the optimizer sees the parameters
        ema_full = frozen_copy(ema) if dist.main else None  # rank 0's full copy for grids
        nets = [*method.trainable().values(), *method.targets().values()]
        fsdp.shard(nets, uses_bf16(device, tc.precision))
        fsdp.shard_like(ema, method.trainable())
    opt, sched = optimizer_for(method, tc)
    step, why = build_step(cfg, method, ema, opt, sched, dist)
    kind = "compiled" if isinstance(step, CompiledStep) else "eager"
    return Session(
        cfg,
        device,
        method,
        ema,
        opt,
        sched,
        step,
        kind,
        why,
        dataset,
        data_note,
        dist,
        [],
        ema_full,
    )


def build(
    cfg: Config,
    *,
    data: str = "required",
    dist: distributed.Dist | None = None,
) -> Session:
    """The run `cfg` describes. data: "required" (a missing dataset is a DataError),
    "optional" (without it, `batches()` gives random images and says why), "none". Under
    torchrun pass `dist` (distributed.from_env()): the process group is joined here, and the
    method gathers the global batch where it asks to."""
    if data not in ("required", "optional", "none"):
        raise ValueError(f"data must be 'required', 'optional' or 'none', got {data!r}")
    tc = cfg.train
    if cfg.train.batch_size % (1 if dist is None else dist.world):
        raise ConfigError(
            f"config: train.batch_size={tc.batch_size} (the global batch) is not divisible "
            f"by the {dist.world} ranks"
        )
    per_rank = tc.batch_size // (1 if dist is None else dist.world)
    if per_rank % tc.grad_accum:
        raise ConfigError(
            f"config: train.grad_accum={tc.grad_accum} does not divide the {per_rank} images "
            f"each rank takes per step (train.batch_size={tc.batch_size})"
        )
    device = pick_device(tc.device)
    if dist is not None:
        device = distributed.setup(dist, device, tc.dist_timeout_s)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on every step's activations
    apply_backend(cfg, device)
    dataset, note = None, "no dataset asked for"
    if data != "none":
        try:
            dataset = build_dataset(cfg.data)
            first_readable(dataset, 1)  # a dataset of undecodable files: said now
        except DataError as e:
            if data == "required":
                raise
            note = str(e).split(". ")[0]
    torch.manual_seed(tc.seed)
    method = methods.build(cfg).to(device)
    if dist is not None:
        method.distribute(distributed.gather_rows)
    return _assemble(cfg, device, method, dist, dataset, note)


@dataclass
class TrainedRun:
    """A trained run loaded for evaluation or inference: its config, the method with its
    trained weights, the evaluation EMA (`ema`, a module dict like method.trainable())."""

    cfg: Config
    method: Method
    ema: nn.ModuleDict
    step: int
    checkpoint: Path
    device: torch.device
    notes: list[str] = field(default_factory=list)


def read_weights(ckpt: Path) -> dict[str, Any]:
    """What evaluation and inference need of a checkpoint: its safetensors weights when it
    has them (an inference folder, a .pt's sidecar), else the checkpoint itself."""
    if ckpt.is_dir() and weights.is_inference_folder(ckpt):
        return weights.read_inference_folder(ckpt)
    side = weights.sidecar(ckpt)
    if ckpt.suffix == ".pt" and side.is_file():
        return weights.read_checkpoint_weights(side)
    return checkpoint.read_full(ckpt)


def load_run(
    run: Path, ckpt: Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainedRun:
    """The newest checkpoint of a run folder (or `ckpt`), with `key=value` overrides of what
    does not change the network (data.*, eval.*, ops.*, train.device)."""
    from .legacy import upgrade_state

    run = Path(run)
    if ckpt is None and weights.is_inference_folder(run):  # export --format safetensors
        ckpt = run
    if ckpt is None:
        found = checkpoint.list_checkpoints(run / "checkpoints")
        if not found:
            raise ConfigError(
                f"config: {run} has no checkpoints/ckpt_*.pt|.dcp (a run folder of "
                "python -m arcdae_fast.train or arcdae_fast.convert)"
            )
        ckpt = found[-1][1]
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise ConfigError(f"config: no checkpoint {ckpt}")
    state = upgrade_state(read_weights(ckpt))
    notes: list[str] = []
    cfg = from_dict(with_overrides(state["config"], overrides, notes), notes)
    changed = changed_keys(from_dict(state["config"]), cfg, allowed=("nothing", "training"))
    if changed:
        raise ConfigError(
            f"config: {', '.join(changed)} would change the trained network; only keys that "
            "change nothing or only the training (data.*, eval.*, ops.*, train.*, "
            "model.attn_backend: python -m arcdae_fast.info --keys) may be overridden here"
        )
    device = pick_device(cfg.train.device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    apply_backend(cfg, device)
    method = methods.build(cfg)
    method.load_state_dict(state["model"])
    ema = frozen_copy(method.trainable())
    ema.load_state_dict(state["ema"])
    method.to(device).eval()
    ema.to(device).eval()
    return TrainedRun(cfg, method, ema, int(state["step"]), ckpt, device, cfg.notes)
