"""The method protocol: what every entry point (trainer, step, profiler, benches, evaluation)
may call on a method, and nothing else.

A method is an nn.Module holding its modules (trainable ones and targets such as an EMA
teacher) and its loss. One training step is:

    inputs = method.draw_inputs(x0, generator)          # everything random, outside the graph
    terms = method(x0, inputs, **method.flags(step))     # {"loss": ..., other logged terms}
    terms["loss"].backward(); optimizer.step()           # over method.trainable()
    method.update_targets()                              # e.g. the EMA teacher

and for inference `encode(x0) -> z`, `decode(z, x_T) -> x0`, `invert(x0, z) -> x_T`,
`reconstruct(x0)`, each on the method's own weights or on `nets` (a module dict like
`trainable()`, e.g. the evaluation EMA).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from ..config.schema import Config, MethodConfig
from ..losses.align import Gather


def batch_dim(dim: int) -> Any:
    """A RandomInputs field whose batch dimension is `dim` (default 0)."""
    return field(metadata={"batch_dim": dim})


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """The modules in eval mode (no dropout) and no autograd within; modes restored after."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, w in zip(modules, was):
            m.train(w)


@dataclass
class RandomInputs:
    """Base of a method's random inputs: tensor fields (or None), batch dimension 0 unless
    declared with `batch_dim(d)`. Drawn outside the compiled graph, so that the eager and the
    compiled step compute the same function of the same numbers."""

    def rows(self, lo: int, hi: int) -> RandomInputs:
        """The inputs of batch rows lo..hi-1 (a data-parallel rank's share)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            dim = f.metadata.get("batch_dim", 0)
            out[f.name] = None if v is None else v.narrow(dim, lo, hi - lo)
        return type(self)(**out)


class Method(nn.Module):
    """Base class of a training method (see the module docstring for the protocol)."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    Inputs: ClassVar[type[RandomInputs]]
    # the forward's named sub-phases (arcdae_fast/phases.py), in the profiler's order
    PHASES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Config):
        super().__init__()
        if not isinstance(cfg.method, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__} in cfg.method, got "
                f"{type(cfg.method).__name__}"
            )
        self.cfg = cfg
        self.gather: Gather | None = None

    @property
    def mcfg(self) -> Any:
        """This method's own config section (cfg.method)."""
        return self.cfg.method

    # ---- training --------------------------------------------------------------------------
    def terms(self) -> tuple[str, ...]:
        """The loss terms forward() returns and the trainer logs, "loss" (the total) first."""
        raise NotImplementedError

    def trainable(self) -> nn.ModuleDict:
        """The modules the optimizer updates and the evaluation EMA tracks; it holds
        "denoiser" (every diffusion autoencoder has one)."""
        raise NotImplementedError

    def draw_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None = None, batch: int | None = None
    ) -> RandomInputs:
        """The step's random inputs for images like x0; `batch` rows instead of x0's (the
        global batch under data parallelism, see RandomInputs.rows)."""
        raise NotImplementedError

    def forward(self, x0: torch.Tensor, inputs: RandomInputs, **flags: bool) -> dict:
        """Every term of terms() as a float32 scalar, for images x0 (B, 3, H, W) in [-1, 1]."""
        raise NotImplementedError

    def flags(self, step: int) -> dict[str, bool]:
        """Per-step switches passed to forward (bools, so torch.compile sees a few variants
        instead of one per step number), e.g. a lazy regulariser's schedule."""
        return {}

    def flag_period(self) -> int:
        """flags(step) repeats with this period."""
        return 1

    def flag_mix(self) -> list[tuple[dict[str, bool], int]]:
        """The distinct flags over one period with how many steps use each (the profiler
        averages FLOPs over it)."""
        seen = Counter(tuple(sorted(self.flags(s).items())) for s in range(self.flag_period()))
        return [(dict(k), n) for k, n in seen.items()]

    def update_targets(self) -> None:
        """After the optimizer step: move the targets (e.g. an EMA teacher)."""

    def distribute(self, gather: Gather) -> None:
        """Data parallelism: `gather(rows, with_grad)` returns every rank's rows."""
        self.gather = gather

    def prepare_compile(self, device: torch.device) -> None:
        """Before torch.compile traces forward: settle the lazily built state it reads (every
        VPSchedule attribute's tables on `device`), so its guards hold from the first call."""
        from ..diffusion import VPSchedule

        for v in vars(self).values():
            if isinstance(v, VPSchedule):
                v.prepare(device)

    def compile_blocker(self) -> str | None:
        """Why this configuration cannot run the compiled step, or None."""
        return None

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for target in self.targets().values():
            target.eval()  # targets are never in training mode
        return self

    def targets(self) -> dict[str, nn.Module]:
        """Modules updated outside the optimizer (no gradients), by name."""
        return {}

    # ---- inference ---------------------------------------------------------------------------
    def nets(self, nets: Mapping[str, nn.Module] | None = None) -> Mapping[str, nn.Module]:
        return self.trainable() if nets is None else nets

    def encode(self, x0: torch.Tensor, nets: Mapping[str, nn.Module] | None = None):
        """The representation of images x0 in [-1, 1] (no noise, no augmentation)."""
        raise NotImplementedError

    def decode(
        self,
        z: Any,
        x_T: torch.Tensor,
        *,
        steps: int,
        nets: Mapping[str, nn.Module] | None = None,
        solver: str | None = None,
    ) -> torch.Tensor:
        """Images from codes z, starting the sampler at x_T (random noise or `invert`'s);
        `solver`: diffusion.solvers.SOLVERS on a VP path (default ddim), the flow's own
        (euler, heun; default method.solver) on a flow path."""
        raise NotImplementedError

    def invert(
        self,
        x0: torch.Tensor,
        z: Any,
        *,
        steps: int,
        nets: Mapping[str, nn.Module] | None = None,
    ) -> torch.Tensor:
        """The deterministic sampler run backwards: x0 -> x_T."""
        raise NotImplementedError

    def sampler_fn(self, den: nn.Module):
        """The denoiser net as the samplers call it, (x_t, t, z) -> prediction (what decode
        runs and `python -m arcdae_fast.export --what denoiser` exports)."""
        return den

    def ddim_decode(
        self, fn, z, x_T: torch.Tensor, steps: int, nets=None, solver: str | None = None
    ) -> torch.Tensor:
        """DDIM (or `solver`, diffusion.solvers) from x_T on self.schedule
        (diffusion.parameterization), the denoiser net `nets["denoiser"]` called as
        fn(den)(x_t, i, z) (fn None: den itself)."""
        from ..diffusion.solvers import solve

        den = self.nets(nets)["denoiser"]
        with evaluating(den):
            param = self.cfg.diffusion.parameterization
            model = fn(den) if fn else den
            return solve(model, z, self.schedule, x_T, steps, solver or "ddim", param)

    def ddim_invert(self, fn, x0: torch.Tensor, z, steps: int, nets=None) -> torch.Tensor:
        """The deterministic DDIM run backwards, x0 -> x_T (as ddim_decode)."""
        from ..diffusion import ddim_invert

        den = self.nets(nets)["denoiser"]
        with evaluating(den):
            param = self.cfg.diffusion.parameterization
            return ddim_invert(
                fn(den) if fn else den, x0, z, self.schedule, steps=steps, param=param
            )

    @torch.no_grad()
    def reconstruct(
        self,
        x0: torch.Tensor,
        *,
        steps: int,
        nets: Mapping[str, nn.Module] | None = None,
        x_T: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """encode then decode; from the inverted x_T unless x_T is given."""
        z = self.encode(x0, nets)
        if x_T is None:
            x_T = self.invert(x0, z, steps=steps, nets=nets)
        return self.decode(z, x_T, steps=steps, nets=nets)
