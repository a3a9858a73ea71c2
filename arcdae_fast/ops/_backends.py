"""Backend registry for the public ops.

Each op (e.g. "infonce") has implementations ("reference", "triton", "cpp", "cuda") that
register here with the devices and dtypes they handle, a per-device priority and a probe
that explains why they cannot run. `resolve()` picks one:

- an explicit `backend=` argument other than "auto" is forced: if it cannot run on the given
  device/dtype, a RuntimeError lists every reason (never a silent fallback);
- with `backend="auto"`, a process-level choice applies: the innermost `use_backend(spec)`
  block, else `set_backend(spec)` (the trainer's `ops.backend`), else the environment
  variable ARCDAE_FAST_BACKEND; a spec names one backend for all ops (`reference`) or one
  per op (`infonce=triton,attn_pool=reference`). An unknown op or backend name in a spec is
  a ValueError naming it;
- otherwise the available backend with the highest priority for the device wins, among the
  reference and the fused backends that were measured to beat it on this device class at
  this dtype and work size (arcdae_fast/evidence.py, written by bench/op_evidence.py: from
  the record's `min_size` on; no record, no fused backend). A negative priority means "only
  when forced" (e.g. Triton under TRITON_INTERPRET=1 on CPU, which is correct but slow).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

ENV_VAR = "ARCDAE_FAST_BACKEND"


@dataclass(frozen=True)
class Backend:
    op: str
    name: str
    fn: Any  # reference: the eager function; fast backends: module path of their primitives
    priority: dict[str, int]  # device type -> priority; absent = device unsupported
    dtypes: tuple[torch.dtype, ...]
    # why the backend cannot run on a device type at all (missing library, no driver, ...)
    probe: Callable[[str], list[str]] = field(default=lambda device_type: [])
    # on GPUs (which CI never sees): a one-time comparison with the reference on a tiny input;
    # returns None when it agrees, else why not (the backend is then unavailable there)
    selfcheck: Callable[[str, torch.device], str | None] | None = None

    def reasons(self, device: torch.device, dtype: torch.dtype) -> list[str]:
        out = list(_probe(self.op, self.name, device.type))
        if device.type not in self.priority:
            out.append(
                f"device {device.type!r} not supported (supports "
                f"{', '.join(sorted(self.priority))})"
            )
        if dtype not in self.dtypes:
            out.append(f"dtype {str(dtype).replace('torch.', '')} not supported")
        return out


_REGISTRY: dict[str, dict[str, Backend]] = {}


@torch.compiler.assume_constant_result
def _probe(op: str, name: str, device_type: str) -> tuple[str, ...]:
    """A backend's availability probe, run eagerly even while torch.compile traces (probes
    import modules and load libraries, which Dynamo does not trace)."""
    b = _REGISTRY[op][name]
    why = list(b.probe(device_type))
    if not why and b.selfcheck is not None and device_type in SELFCHECK_DEVICES:
        failed = _selfcheck(op, name, device_type)
        if failed:
            why.append(failed)
    return tuple(why)


SELFCHECK_DEVICES = {"cuda"}  # where fast backends prove themselves before first use
_SELFCHECKS: dict[tuple[str, str, str], str | None] = {}


def _selfcheck(op: str, name: str, device_type: str) -> str | None:
    key = (op, name, device_type)
    if key not in _SELFCHECKS:
        _SELFCHECKS[key] = None  # a check in progress counts as passed (no recursion)
        try:
            _SELFCHECKS[key] = _REGISTRY[op][name].selfcheck(name, torch.device(device_type))
        except Exception as e:  # noqa: BLE001 - a crash is a failed check, with its reason
            _SELFCHECKS[key] = f"failed its self-check on {device_type}: {type(e).__name__}: {e}"
        if _SELFCHECKS[key]:
            warnings.warn(f"{op}: backend {name!r} disabled: {_SELFCHECKS[key]}", stacklevel=3)
    return _SELFCHECKS[key]


def selfcheck_results() -> dict[tuple[str, str, str], str | None]:
    """The self-checks run so far: (op, backend, device type) -> None or the failure."""
    return dict(_SELFCHECKS)


ANY_DEVICE = {"cpu": 0, "cuda": 0, "mps": 0, "meta": 0}
ALL_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
LOW_AND_SINGLE = (torch.float32, torch.float16, torch.bfloat16)


def primitives(op: str, backend: str) -> ModuleType | Any:
    """The kernel primitives of a fast backend, registered as "module" or "module:attribute"
    and imported on first use, so that `import arcdae_fast` never imports Triton or loads the
    extension."""
    module, _, attr = backends(op)[backend].fn.partition(":")
    found = importlib.import_module(module)
    return getattr(found, attr) if attr else found


def register(
    op: str,
    name: str,
    fn: Any,
    *,
    priority: dict[str, int],
    dtypes: Sequence[torch.dtype],
    probe: Callable[[str], list[str]] | None = None,
    selfcheck: Callable[[str, torch.device], str | None] | None = None,
) -> None:
    _REGISTRY.setdefault(op, {})[name] = Backend(
        op,
        name,
        fn,
        dict(priority),
        tuple(dtypes),
        probe or (lambda device_type: []),
        selfcheck,
    )


def outside_autocast(fn: Callable) -> Callable:
    """A reference that computes as the fast backends do, in float32 (float64 for float64
    inputs), also when called inside an autocast region: autocast would turn its matmuls into
    bf16 ones, so the eager step would compute another function with the reference than with
    a fused op (measured: the augmentation's hue einsum put a 7e-3 error on the view). The
    first argument's device names the autocast region; on meta (shapes only) there is none."""

    @functools.wraps(fn)
    def run(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if x.is_meta:
            return fn(x, *args, **kwargs)
        with torch.autocast(x.device.type, enabled=False):
            return fn(x, *args, **kwargs)

    return run


def register_reference(op: str, fn: Callable) -> None:
    """The eager ground truth: any device, any float dtype, priority 0."""
    register(op, "reference", fn, priority=ANY_DEVICE, dtypes=ALL_FLOATS)


def backends(op: str) -> dict[str, Backend]:
    if op not in _REGISTRY:
        raise KeyError(f"unknown op {op!r}; registered ops: {sorted(_REGISTRY)}")
    return _REGISTRY[op]


def ops() -> list[str]:
    return sorted(_REGISTRY)


# ---- which backend: the process-level setting ---------------------------------------------
# A spec is "auto", one backend for every op ("reference"), or per op
# ("infonce=triton,adagn=reference"); parsed into {op or None (every op): backend}.
Spec = dict  # dict[str | None, str]
_PROCESS: list[tuple[str, Spec]] = []  # set_backend(): at most one (source, spec)
_CONTEXTS: list[tuple[str, Spec]] = []  # active use_backend() blocks, innermost last
_PARSED_ENV: dict[str, Spec] = {}


def _known_backends() -> list[str]:
    return sorted({name for table in _REGISTRY.values() for name in table})


def parse_spec(spec: str, source: str) -> Spec:
    """Validate a backend spec and parse it; ValueError names the source, the bad part and
    what is valid (an unknown op name is an error, never silently ignored)."""
    if not isinstance(spec, str):
        raise TypeError(f"{source}: a backend spec must be a str, got {type(spec).__name__}")
    spec = spec.strip()
    if spec in ("", "auto"):
        return {}
    if "=" not in spec:
        if spec not in _known_backends():
            raise ValueError(
                f"unknown backend {spec!r} (from {source}); known: "
                f"{', '.join(['auto', *_known_backends()])}, or per op: "
                f"'{ops()[0]}=reference,...'"
            )
        return {None: spec}
    out: Spec = {}
    for item in spec.split(","):
        op, eq, name = (part.strip() for part in item.partition("="))
        if not eq or not op or not name:
            raise ValueError(
                f"{source}: {item.strip()!r} must look like op=backend (ops: {', '.join(ops())})"
            )
        if op not in _REGISTRY:
            public = {
                "snr_weighted_infonce": "infonce",
                "attention_pool": "attn_pool",
                "timestep_augment": "augment",
            }
            hint = f" (the op of {op}() is named {public[op]!r})" if op in public else ""
            raise ValueError(f"{source}: unknown op {op!r}{hint}; ops: {', '.join(ops())}")
        if name != "auto" and name not in _REGISTRY[op]:
            raise ValueError(
                f"{source}: unknown backend {name!r} for op {op!r}; known: "
                f"{', '.join(['auto', *sorted(_REGISTRY[op])])}"
            )
        if name != "auto":
            out[op] = name
    return out


def set_backend(spec: str, source: str = "ops.backend") -> None:
    """The process-level backend choice (the trainer sets it from the config's ops.backend).
    "auto" clears it, so that ARCDAE_FAST_BACKEND (or the priorities) decide."""
    parsed = parse_spec(spec, source)
    _PROCESS.clear()
    if parsed:
        _PROCESS.append((source, parsed))


@contextlib.contextmanager
def use_backend(spec: str) -> Iterator[None]:
    """Within the block, ops called with backend="auto" use `spec` (innermost block wins over
    set_backend and ARCDAE_FAST_BACKEND; an explicit backend= argument wins over all)."""
    source = f"use_backend({spec!r})"
    _CONTEXTS.append((source, parse_spec(spec, source)))
    try:
        yield
    finally:
        _CONTEXTS.pop()


def env_spec() -> Spec:
    """ARCDAE_FAST_BACKEND parsed (and validated: a bad value raises)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if raw not in _PARSED_ENV:
        _PARSED_ENV[raw] = parse_spec(raw, f"environment variable {ENV_VAR}")
    return _PARSED_ENV[raw]


def _parse_env_now() -> None:
    """Fill the cache for the environment's value once every op has registered (the end of
    arcdae_fast/ops/__init__.py): torch.compile guards on the
    cache's keys, so a first parse inside a traced op would add a key and make the second
    call recompile the whole step (measured: a second 35-80 s compile). A bad value raises
    at the first op call, with its message."""
    with contextlib.suppress(ValueError):
        env_spec()


def _pick(spec: Spec, op: str) -> str | None:
    """The spec's backend for op: its own entry, else the one for every op that has it."""
    name = spec.get(op)
    if name is None and spec.get(None) in _REGISTRY[op]:
        name = spec[None]
    return name


def _choice(op: str) -> tuple[str, str] | None:
    """(backend, where the choice comes from) for an op called with backend="auto"."""
    for source, spec in [*reversed(_CONTEXTS), *_PROCESS]:
        name = _pick(spec, op)
        if name:
            return name, source
    name = _pick(env_spec(), op)
    return (name, f"environment variable {ENV_VAR}") if name else None


def check_runnable(device: torch.device) -> None:
    """ValueError naming each op whose process-level choice (use_backend, set_backend,
    ARCDAE_FAST_BACKEND) cannot run on `device`: before a model is built, not at the op's
    first call."""
    why = []
    for op in ops():
        chosen = _choice(op)
        if chosen:
            reasons = _REGISTRY[op][chosen[0]].reasons(device, torch.float32)
            if reasons:
                why.append(f"{op}: backend {chosen[0]!r} (from {chosen[1]}): {'; '.join(reasons)}")
    if why:
        raise ValueError(f"cannot run on {device.type}: " + " | ".join(why))


@torch.compiler.assume_constant_result
def auto_min_size(op: str, name: str, device_type: str, dtype: torch.dtype) -> int:
    """The smallest work size from which `auto` may pick backend `name` of `op` on this
    device's class at `dtype` (the reference: 0), or -1: no measurement says it wins here."""
    if name == "reference":
        return 0
    from .. import evidence

    dclass = evidence.device_class(torch.device(device_type))
    found = evidence.op_min_size(dclass, op, name, dtype)
    return -1 if found is None else found


def resolve(
    op: str, backend: str, device: torch.device, dtype: torch.dtype, size: int = 0
) -> Backend:
    """Choose the implementation of `op` for inputs on `device` with `dtype`; `size` is the
    op's work size, compared with the measured `auto_min_size` (auto only)."""
    table = backends(op)
    if not isinstance(backend, str):
        raise TypeError(f"{op}: argument 'backend' must be a str, got {type(backend).__name__}")
    source = "argument 'backend'"
    if backend == "auto":
        chosen = _choice(op)
        if chosen is not None:
            backend, source = chosen
    if backend != "auto":
        if backend not in table:
            raise ValueError(
                f"{op}: unknown backend {backend!r} (from {source}); known: "
                f"{', '.join(['auto', *sorted(table)])}"
            )
        why = table[backend].reasons(device, dtype)
        if why:
            raise RuntimeError(
                f"{op}: backend {backend!r} (from {source}) cannot run on "
                f"{device.type}/{str(dtype).replace('torch.', '')}: " + "; ".join(why)
            )
        return table[backend]
    ok = [
        b
        for b in table.values()
        if b.priority.get(device.type, -1) >= 0
        and 0 <= auto_min_size(op, b.name, device.type, dtype) <= size
        and not b.reasons(device, dtype)
    ]
    if not ok:
        why = {
            name: b.reasons(device, dtype) or ["only used when forced"] for name, b in table.items()
        }
        raise RuntimeError(f"{op}: no backend can run on {device.type}/{dtype}: {why}")
    best = ok[0]
    for b in ok[1:]:  # a plain loop: torch.compile traces this function
        if b.priority[device.type] > best.priority[device.type]:
            best = b
    return best
