"""The C++/CUDA op library `arcdae_fast._C` (built from csrc/): loading, availability, and
its ops grouped as backend primitives ("cpp" on CPU tensors, "cuda" on CUDA tensors; the same
dispatcher ops, routed by device).

The package works without it: the probes below say why it is unavailable and `auto` uses
the other backends.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache, partial
from pathlib import Path
from types import SimpleNamespace

import torch

CPP_PRIORITY = {"cpu": 10}
CUDA_PRIORITY = {"cuda": 10}
CUDA_PRIORITY_BEHIND_TRITON = {"cuda": 5}


def register(
    op: str,
    cuda_priority: dict[str, int] | None = None,
    selfcheck=None,
) -> None:
    """Register the extension's backends for `op`: "cpp" (CPU tensors) and, when the op has
    CUDA kernels, "cuda" (`auto` picks them where measured to win: arcdae_fast/evidence.py).
    Their primitives are this module's attribute named `op`, calling the schemas
    arcdae_fast_C::<op>_forward / <op>_backward (csrc/ops.cpp)."""
    from . import _backends

    path = f"arcdae_fast.ops._ext:{op}"
    _backends.register(
        op,
        "cpp",
        path,
        priority=CPP_PRIORITY,
        dtypes=_backends.LOW_AND_SINGLE,
        probe=cpp_reasons,
        selfcheck=selfcheck,
    )
    if cuda_priority is not None:
        _backends.register(
            op,
            "cuda",
            path,
            priority=cuda_priority,
            dtypes=_backends.LOW_AND_SINGLE,
            probe=cuda_reasons,
        )


def build_info() -> dict:
    path = Path(__file__).resolve().parents[1] / "_build_info.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=1)
def load_error() -> str | None:
    """None once the library is loaded, else why it cannot be."""
    spec = importlib.util.find_spec("arcdae_fast._C")
    if spec is None or spec.origin is None:
        why = build_info().get("why_no_cpu") or (
            "not built: install with `pip install -e .` (needs a C++ compiler)"
        )
        return f"the C++ extension arcdae_fast._C is missing ({why})"
    try:
        torch.ops.load_library(spec.origin)
    except OSError as e:
        return f"arcdae_fast._C failed to load ({e})"
    _register_fakes()
    return None


def _register_fakes() -> None:
    """Fake (meta) kernels of the C++ primitives: the shapes and dtypes the CPU and CUDA
    kernels return (csrc/cpu/*.cpp, csrc/cuda/bindings.cpp), so that they trace under fake
    tensors and pass torch.library.opcheck."""
    lib = "arcdae_fast_C::"

    def empty(like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        return like.new_empty(0, dtype=dtype)

    @torch.library.register_fake(lib + "adagn_forward")
    def _(x, weight, bias, scale, shift, zscale, groups, eps):
        stats = scale.new_empty(x.shape[0], groups)
        saved = x.device.type == "cpu" and x.dtype == torch.float32  # the CPU saves sigmoid
        sig = torch.empty_like(x) if saved else empty(x, x.dtype)
        return torch.empty_like(x), stats, torch.empty_like(stats), sig

    @torch.library.register_fake(lib + "adagn_backward")
    def _(dy, x, weight, bias, scale, shift, zscale, mean, rstd, sig, groups):
        c = scale.shape[1]
        per_channel = lambda t: scale.new_empty(c) if t is not None else empty(scale)  # noqa: E731
        dz = torch.empty_like(scale) if zscale is not None else empty(scale)
        return (
            torch.empty_like(x),
            per_channel(weight),
            per_channel(bias),
            torch.empty_like(scale),
            torch.empty_like(scale),
            dz,
        )

    @torch.library.register_fake(lib + "augment_forward")
    def _(x, params, alpha, sigma, noise, seed, offset):
        third = empty(x, x.dtype) if noise is not None else torch.empty_like(x)
        return torch.empty_like(x), torch.empty_like(x), third

    @torch.library.register_fake(lib + "infonce_forward")
    def _(q, k, inv_q, inv_k, scale):
        return q.new_empty(q.shape[0], dtype=torch.float32)

    @torch.library.register_fake(lib + "infonce_backward")
    def _(q, k, inv_q, inv_k, scale, lse_own, c_own, lse_other, c_other):
        return q.new_empty(q.shape, dtype=torch.float32)

    @torch.library.register_fake(lib + "attn_pool_forward")
    def _(x, qk):
        b, _, c = x.shape
        return x.new_empty(b, qk.shape[0], c), x.new_empty(b, qk.shape[0], dtype=torch.float32)

    @torch.library.register_fake(lib + "attn_pool_backward")
    def _(dout, x, qk, delta, lse):
        return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(qk)


def cpp_reasons(device_type: str) -> list[str]:
    if device_type != "cpu":
        return [f"the cpp backend runs on CPU tensors, not {device_type!r}"]
    err = load_error()
    return [err] if err else []


def cuda_reasons(device_type: str) -> list[str]:
    if device_type != "cuda":
        return [f"the cuda backend runs on CUDA tensors, not {device_type!r}"]
    err = load_error()
    if err:
        return [err]
    if not torch._C._dispatch_has_kernel_for_dispatch_key("arcdae_fast_C::adagn_forward", "CUDA"):
        why = build_info().get("why_no_cuda") or "built without CUDA sources"
        return [f"arcdae_fast._C has no CUDA kernels ({why}); rebuild on a CUDA machine"]
    if not torch.cuda.is_available():
        return ["torch.cuda.is_available() is False"]
    return []


def _call(name: str, *args):
    err = load_error()
    if err:
        raise RuntimeError(err)
    return getattr(torch.ops.arcdae_fast_C, name)(*args)


def _augment(x, params, alpha, sigma, noise, seed=0, offset=0):
    return _call("augment_forward", x, params, alpha, sigma, noise, seed, offset)


adagn = SimpleNamespace(
    forward=partial(_call, "adagn_forward"), backward=partial(_call, "adagn_backward")
)
infonce = SimpleNamespace(
    lse_rows=partial(_call, "infonce_forward"), grad_rows=partial(_call, "infonce_backward")
)
attn_pool = SimpleNamespace(
    pool_fwd=partial(_call, "attn_pool_forward"), pool_bwd=partial(_call, "attn_pool_backward")
)
augment = SimpleNamespace(augment=_augment)
