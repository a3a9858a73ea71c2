"""`python -m arcdae_fast.info`: versions, devices, which op backends work here and why not."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys

import torch

from .ops import _backends


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _dali_version() -> str:
    for dist in ("nvidia-dali-cuda130", "nvidia-dali-cuda120"):
        if (v := _version(dist)) != "not installed":
            return f"{v} ({dist})"
    return "not installed"


def report() -> str:
    import arcdae_fast.ops  # noqa: F401 - registers every op's backends

    lines = [
        f"arcdae_fast {importlib.import_module('arcdae_fast').__version__}",
        f"python {platform.python_version()} ({sys.platform}, {platform.machine()})",
        f"torch {torch.__version__} (CUDA build: {torch.version.cuda})",
        f"triton {_version('triton')}",
        f"nvidia-dali {_dali_version()}",
    ]
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
        lines.append(
            f"GPU: {torch.cuda.get_device_name()} "
            f"(sm_{''.join(map(str, torch.cuda.get_device_capability()))})"
        )
    else:
        lines.append("GPU: none (torch.cuda.is_available() is False)")
    from .ops import _ext

    info = _ext.build_info()
    err = _ext.load_error()
    if err:
        lines.append(f"C++ extension: not usable ({err})")
    else:
        cuda = (
            ("with CUDA kernels (archs " + info.get("cuda_archs", "?") + ")")
            if info.get("cuda")
            else f"CPU kernels only ({info.get('why_no_cuda') or 'no CUDA sources'})"
        )
        lines.append(f"C++ extension: built, {cuda}")
    env = _backends.ENV_VAR
    lines.append(
        f"{env}={os.environ.get(env, '')!r}  TRITON_INTERPRET="
        f"{os.environ.get('TRITON_INTERPRET', '')!r}"
    )
    for op in _backends.ops():
        lines.append(f"\n{op}:")
        for dev in devices:
            device = torch.device(dev)
            try:
                chosen = _backends.resolve(op, "auto", device, torch.float32).name
            except RuntimeError as e:
                chosen = f"none ({e})"
            lines.append(f"  {dev}: auto -> {chosen}")
            for name, b in _backends.backends(op).items():
                why = b.reasons(device, torch.float32)
                if why:
                    state = "unavailable: " + "; ".join(why)
                elif b.priority.get(dev, -1) < 0:
                    state = "available when forced (not picked by auto)"
                else:
                    state = f"available (priority {b.priority[dev]})"
                lines.append(f"    {name:<10} {state}")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
