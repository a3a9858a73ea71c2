"""The U-Net's self-attention kernel, picked by `model.attn_backend`:

- `sdpa`: torch's scaled_dot_product_attention (itself dispatching to its flash /
  memory-efficient / math kernels), everywhere;
- `flash_attn`: flash-attn's flash_attn_func, when it imports, on CUDA, in fp16/bf16, head
  size <= 256;
- `xformers`: xformers.ops.memory_efficient_attention, when it imports, on CUDA;
- `auto` (the default): flash_attn, else xformers, else sdpa, the first that can run on the
  call's device, dtype and head size.

The rules are the op backends' (ops/_backends.py): a forced backend that cannot run is an
error listing every reason (never a silent substitute), checked when a run starts
(`check`, for the run's device and compute dtype) and again at the call; `python -m
arcdae_fast.info` lists each backend's reasons. The choice is process-level
(`set_backend`, the session's, from the config), read by every AttentionBlock.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flash_attn", "xformers")
CHOICES = ("auto",) + BACKENDS
_AUTO_ORDER = ("flash_attn", "xformers", "sdpa")
_choice = "auto"


def _try_import(mod: str):
    """(module, None) or (None, why it does not import)."""
    try:
        return importlib.import_module(mod), None
    except Exception as e:  # noqa: BLE001 - any import failure is a reason
        return None, f"{mod} does not import ({type(e).__name__}: {str(e)[:120]})"


# Tried once, here, so that resolving a backend inside a torch.compile'd step is plain
# dict reads (dynamo cannot trace an import).
_IMPORTED = {"flash_attn": _try_import("flash_attn"), "xformers": _try_import("xformers.ops")}


def _import(name: str):
    return _IMPORTED[name]


def reasons(name: str, device: torch.device, dtype: torch.dtype, head_dim: int = 64) -> list[str]:
    """Why backend `name` cannot run attention on this device, dtype and head size."""
    if name not in BACKENDS:
        raise ValueError(f"model.attn_backend must be one of {CHOICES}, got {name!r}")
    if name == "sdpa":
        return []
    out = []
    _, why = _import(name)
    if why:
        out.append(why)
    if torch.device(device).type != "cuda":
        out.append(f"needs a CUDA device (this is {torch.device(device).type})")
    if name == "flash_attn":
        if dtype not in (torch.float16, torch.bfloat16):
            out.append(f"needs fp16/bf16 (this is {str(dtype).replace('torch.', '')})")
        if head_dim > 256:
            out.append(f"head size {head_dim} > 256")
    return out


def set_backend(name: str) -> None:
    if name not in CHOICES:
        raise ValueError(f"model.attn_backend must be one of {CHOICES}, got {name!r}")
    global _choice
    _choice = name


def resolve(choice: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> str:
    if choice == "auto":
        return next(n for n in _AUTO_ORDER if not reasons(n, device, dtype, head_dim))
    why = reasons(choice, device, dtype, head_dim)
    if why:
        raise RuntimeError(f"model.attn_backend={choice} cannot run here: " + "; ".join(why))
    return choice


def check(choice: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend `choice` resolves to for a run on device/dtype (an error if forced and
    unavailable); head sizes are checked at the call."""
    set_backend(choice)
    return resolve(choice, device, dtype, 64)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (B, heads, L, d) tensors, on the chosen backend."""
    name = resolve(_choice, q.device, q.dtype, q.shape[-1])
    if name == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # both take (B, L, heads, d)
    if name == "flash_attn":
        out = _import("flash_attn")[0].flash_attn_func(q, k, v)
    else:
        out = _import("xformers")[0].memory_efficient_attention(q, k, v)
    return out.transpose(1, 2)
