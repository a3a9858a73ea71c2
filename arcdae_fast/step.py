"""One training step. `EagerStep` is the eager ground truth: the method's forward (all its
loss terms), backward, clipping, AdamW, then the method's targets (e.g. the ArcDAE teacher)
and the evaluation EMA. `CompiledStep` is the same step compiled; `build_step` makes the one
`train.step` asks for (auto: `choose_step`). The phases are torch.profiler ranges
(arcdae_fast/phases.py).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math

import torch
from torch import nn

from . import distributed, evidence, fsdp
from .config.schema import Config, ConfigError, TrainConfig
from .ema import ema_update, warmup_decay
from .methods import Method, RandomInputs
from .phases import phase


class NonFiniteLoss(FloatingPointError):
    """The loss is NaN or inf; raised before any parameter is touched."""


def build_optimizer(
    method: Method,
    lr: float,
    betas: tuple[float, ...],
    weight_decay: float,
    warmup_steps: int,
    *,
    eps: float = 1e-8,
    schedule: str = "constant",
    min_lr: float = 0.0,
    total_steps: int = 0,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over method.trainable() with a linear warm-up to `lr`, then `schedule`: constant
    (DiffAE's), or a cosine / linear decay reaching `min_lr` at `total_steps` (DGAE's); the
    fused kernel on CUDA, the foreach one elsewhere."""
    params = [p for p in method.trainable().parameters() if p.requires_grad]
    cuda = bool(params) and params[0].is_cuda
    opt = torch.optim.AdamW(
        params,
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        weight_decay=weight_decay,
        fused=True if cuda else None,
        foreach=None if cuda else True,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        functools.partial(
            lr_factor, warmup_steps, schedule, min_lr / lr if lr else 0.0, total_steps
        ),
    )
    return opt, sched


def optimizer_for(
    method: Method, tc: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """build_optimizer with the train.* settings."""
    return build_optimizer(
        method,
        tc.lr,
        tc.adam_betas,
        tc.weight_decay,
        tc.warmup_steps,
        eps=tc.adam_eps,
        schedule=tc.lr_schedule,
        min_lr=tc.min_lr,
        total_steps=tc.max_steps,
    )


def lr_factor(warmup: int, schedule: str, floor: float, total: int, s: int) -> float:
    """The learning rate at scheduler step s as a fraction of the peak: (s + 1) / warmup
    during the warm-up, then 1 (constant) or a decay from 1 to `floor` at step `total`."""
    if warmup and s < warmup:
        return (s + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule not in ("cosine", "linear"):
        raise ValueError(f"lr schedule must be constant, cosine or linear, got {schedule!r}")
    span = max(1, total - warmup)
    done = min(1.0, max(0, s - warmup) / span)
    decay = 0.5 * (1 + math.cos(math.pi * done)) if schedule == "cosine" else 1 - done
    return floor + (1 - floor) * decay


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively: CUDA, or an x86 CPU with AVX512-BF16 / AMX
    (oneDNN then runs bf16 convolutions and matmuls at full speed; emulated bf16 is slower
    than fp32)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(cpu_bf16_flags())


def cpu_bf16_flags() -> list[str]:
    """The CPU's native-bf16 feature flags present (AVX512-BF16, AMX-BF16)."""
    return sorted(evidence.cpu_flags() & {"avx512_bf16", "amx_bf16"})


def uses_bf16(device: torch.device, precision: str) -> bool:
    """precision auto: bf16 autocast where the device computes bf16 natively, else fp32."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if not uses_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def choose_step(cfg: Config, method: Method, device: torch.device) -> tuple[str, str]:
    """(eager | compiled, why) for train.step. auto: the compiled step only where step
    agreement (bench/step_agreement.py) recorded, for this device class, method and precision,
    that it trains the same model as the eager step and runs at least 1.1x as fast
    (arcdae_fast/evidence.py); the eager step everywhere else."""
    want, blocker = cfg.train.step, method.compile_blocker()
    if want == "compiled":
        if blocker:
            raise ConfigError(f"config: train.step=compiled: {blocker}")
        return "compiled", "train.step=compiled"
    if want == "eager":
        return "eager", "train.step=eager"
    if blocker:
        return "eager", f"train.step=auto: {blocker}"
    precision = "bf16" if uses_bf16(device, cfg.train.precision) else "fp32"
    dclass = evidence.device_class(device)
    compiled, why = evidence.step_verdict(dclass, cfg.method.name, precision)
    return ("compiled" if compiled else "eager"), f"train.step=auto: {why}"


class Forward(nn.Module):
    """The method's forward under the step's autocast, as a module (what DDP wraps and
    torch.compile compiles). Autocast is entered inside: compiled under an autocast entered
    outside, the backward is traced under it too, so the backward of a region that disables
    autocast (the fd Jacobian's float32 encoder call) ran in bf16 and its gradients were
    wrong (measured: 7x relative error on the holistic head)."""

    def __init__(self, method: Method, bf16: bool):
        super().__init__()
        self.method, self.bf16 = method, bf16

    def forward(self, x0: torch.Tensor, inputs: RandomInputs, flags: dict) -> dict:
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.method(x0, inputs, **flags)


class EagerStep:
    """The eager step. With `dist` (data parallelism) the ranks agree on a non-finite loss,
    average their gradients during backward (parallel "ddp": DistributedDataParallel's
    buckets all-reduced; "fsdp": the networks are FSDP2-sharded (arcdae_fast/fsdp.py) and
    their gradients reduce-scattered), and return the loss terms averaged over ranks (the
    global batch's)."""

    def __init__(
        self,
        method: Method,
        ema: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        grad_clip: float,
        ema_decay: float,
        precision: str = "fp32",
        dist: distributed.Dist | None = None,
        parallel: str = "ddp",
        grad_accum: int = 1,
    ):
        self.method, self.ema, self.opt, self.sched = method, ema, optimizer, scheduler
        self.grad_clip, self.ema_decay, self.dist = grad_clip, ema_decay, dist
        self.grad_accum = grad_accum
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.device = next(method.parameters()).device
        self.bf16 = uses_bf16(self.device, precision)  # decided once, outside any graph
        self.ddp = dist is not None and parallel == "ddp"
        self.fsdp = dist is not None and parallel == "fsdp"  # session.build sharded the nets
        fwd = self.compile(Forward(method, self.bf16))
        self.runner = distributed.wrap_ddp(fwd) if self.ddp else fwd

    def compile(self, fwd: Forward) -> nn.Module:
        """The eager step runs the forward as it is (CompiledStep compiles it)."""
        return fwd

    def release_ddp(self) -> None:
        """Drop the DistributedDataParallel wrapper, before the process group is destroyed
        (distributed.finish says why). The step cannot train data-parallel afterwards."""
        if isinstance(self.runner, nn.parallel.DistributedDataParallel):
            self.runner = self.runner.module
            gc.collect()  # DDP sits in reference cycles: its reducer goes now, not later

    def forward(self, x0: torch.Tensor, inputs: RandomInputs, step: int) -> dict:
        return self.runner(x0, inputs, self.method.flags(step))

    def _check_finite(self, out: dict, step: int, device: torch.device) -> None:
        finite = bool(torch.isfinite(out["loss"]))
        if self.dist is not None:  # every rank stops, or none
            finite = not distributed.any_rank(not finite, device)
        if not finite:
            terms = ", ".join(f"{k}={v.item():.4g}" for k, v in out.items())
            raise NonFiniteLoss(f"non-finite loss at step {step} ({terms})")

    def __call__(self, x0: torch.Tensor, inputs: RandomInputs, step: int) -> dict:
        self.method.train()
        self.opt.zero_grad(set_to_none=True)
        k, m = self.grad_accum, x0.shape[0] // self.grad_accum
        total: dict = {}
        for i in range(k):  # micro-batches: gradients summed, each loss scaled by 1 / k
            last = i == k - 1
            xi, ii = x0[i * m : (i + 1) * m], inputs.rows(i * m, (i + 1) * m)
            with phase("forward"):
                out = self.forward(xi, ii, step)
            self._check_finite(out, step, x0.device)
            # the gradients are averaged over ranks on the last micro-batch's backward only
            sync = contextlib.nullcontext()
            if self.ddp and not last:
                sync = self.runner.no_sync()
            if self.fsdp and k > 1:
                fsdp.set_gradient_sync(list(self.method.trainable().values()), last)
            with phase("backward"), sync:
                (out["loss"] / k).backward()
            for name, v in out.items():
                v = v.detach() / k
                total[name] = v if name not in total else total[name] + v
        out = total
        with phase("optimizer"):
            if self.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
                out["grad_norm"] = fsdp.local(norm)  # FSDP: a DTensor
            self.opt.step()
            self.sched.step()
        with phase("ema"):
            self.method.update_targets()
            ema_update(self.ema, self.method.trainable(), warmup_decay(self.ema_decay, step))
        # copies: with CUDA graphs the outputs' memory is reused by the next replay
        out = {name: v.detach().clone() for name, v in out.items()}
        if self.dist is not None:
            names = list(out)
            avg = distributed.average(torch.stack([out[k].float() for k in names]))
            out = dict(zip(names, avg.unbind()))
        return out


class CompiledStep(EagerStep):
    """The same step with the method's forward under torch.compile(fullgraph=True): for
    ArcDAE the teacher, fused augmentation + noising, the student encoder with the fd
    Jacobian, the denoiser and every loss term in one graph (AOTAutograd compiles the
    backward too); the ops on their process-level backends (Triton / CUDA / C++ kernels where
    they are faster). Then the shared update: foreach gradient clipping, fused (CUDA) /
    foreach AdamW, the targets' and evaluation EMAs as foreach lerps. On CUDA the model and
    images are channels_last (cuDNN's native convolution layout for tensor cores); on CPU
    they stay contiguous (measured: channels_last made the compiled quickstart step ~10%
    slower with oneDNN, bench/bench_step.py). The random inputs are drawn outside the graph,
    so both steps compute the same function of the same numbers.

    compile_mode: "default", "reduce-overhead" (CUDA graphs; static shapes) or "max-autotune".
    No graph breaks: fullgraph=True raises on any. A method says why a configuration cannot
    compile (Method.compile_blocker), and this step refuses it.
    """

    def __init__(
        self,
        method: Method,
        ema: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        *,
        compile_mode: str = "default",
        compile_backend: str = "inductor",
        **kw: object,
    ):
        """compile_mode as below; compile_backend torch.compile's (the trainer's is Inductor;
        "eager" / "aot_eager" trace without code generation, for checks); the other
        keywords are EagerStep's."""
        blocker = method.compile_blocker()
        if blocker:
            raise ValueError(f"train.step=compiled: {blocker}; use train.step=eager")
        self.channels_last = next(method.parameters()).is_cuda
        if self.channels_last and not fsdp.is_sharded(method):  # before DDP builds buckets
            method.to(memory_format=torch.channels_last)  # (FSDP shards dim 0: contiguous)
        self.compile_mode, self.compile_backend = compile_mode, compile_backend
        self.cuda_graphs = compile_mode == "reduce-overhead"
        method.prepare_compile(next(method.parameters()).device)
        super().__init__(method, ema, optimizer, scheduler, **kw)

    def compile(self, fwd: Forward) -> nn.Module:
        """torch.compile of the forward module; under DDP it is wrapped after compiling, so
        DDP's hooks stay eager around it and Dynamo's DDPOptimizer splits the graph at the
        gradient buckets (their all-reduces overlap with the compiled backward)."""
        mode = None if self.compile_mode == "default" else self.compile_mode
        # FSDP2's hooks run eagerly between the graphs (Dynamo does not trace them), so
        # under fsdp the forward compiles into one graph per stretch between sharded units
        return torch.compile(
            fwd, fullgraph=not self.fsdp, dynamic=False, mode=mode, backend=self.compile_backend
        )

    def forward(self, x0: torch.Tensor, inputs: RandomInputs, step: int) -> dict:
        if self.cuda_graphs:  # a new iteration: the previous replay's outputs are dead
            torch.compiler.cudagraph_mark_step_begin()
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return self.runner(x0.contiguous(memory_format=fmt), inputs, self.method.flags(step))


def build_step(
    cfg: Config,
    method: Method,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    dist: distributed.Dist | None = None,
) -> tuple[EagerStep, str]:
    """The step train.step asks for (compiled: CompiledStep with train.compile_mode), and why."""
    tc = cfg.train
    kind, why = choose_step(cfg, method, next(method.parameters()).device)
    kw = dict(
        grad_clip=tc.grad_clip,
        ema_decay=tc.ema_decay,
        precision=tc.precision,
        dist=dist,
        parallel=tc.parallel,
        grad_accum=tc.grad_accum,
    )
    if kind == "compiled":
        return CompiledStep(
            method, ema, optimizer, scheduler, compile_mode=tc.compile_mode, **kw
        ), why
    return EagerStep(method, ema, optimizer, scheduler, **kw), why
