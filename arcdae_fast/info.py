"""`python -m arcdae_fast.info [--keys [METHOD]]`: versions, devices, the registered methods,
which op backends work here and why not; --keys lists every config key (with the method's own
`method.*` keys) with its type, default and meaning."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys

import torch

from . import log as logs
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
    from . import methods
    from .step import cpu_bf16_flags

    lines.append(f"methods: {', '.join(methods.names())}")
    from .data import layout, layouts  # noqa: F401  (layouts: the built-ins register)

    lines.append(f"datasets (data.dataset): {', '.join(layout.names())}")
    if importlib.util.find_spec("sklearn") is not None:  # the eval extra
        from .eval import registry

        lines.append(f"evaluation suites: {', '.join(registry.load())}")
    lines.append(f"CPU native bf16: {', '.join(cpu_bf16_flags()) or 'none (AVX2 or older)'}")
    env = _backends.ENV_VAR
    lines.append(
        f"{env}={os.environ.get(env, '')!r}  TRITON_INTERPRET="
        f"{os.environ.get('TRITON_INTERPRET', '')!r}"
    )
    for op in _backends.ops():
        lines.append(f"\n{op}:")
        for dev in devices:
            lines += _op_lines(op, torch.device(dev))
    lines += _step_lines(devices) + _attention_lines(devices) + _export_lines()
    return "\n".join(lines)


def _op_lines(op: str, device: torch.device) -> list[str]:
    """What `auto` picks for op on device (fp32 and, where native, bf16) and the measurements
    behind it (arcdae_fast/evidence.json), then every backend's state."""
    from . import evidence
    from .step import native_bf16

    dev, dclass = device.type, evidence.device_class(device)
    dtypes = [torch.float32] + ([torch.bfloat16] if native_bf16(device) else [])
    out = []
    for dtype in dtypes:
        dt = str(dtype).replace("torch.", "")
        try:
            small = _backends.resolve(op, "auto", device, dtype, 0).name
            big = _backends.resolve(op, "auto", device, dtype, 1 << 60).name
        except RuntimeError as e:
            out.append(f"  {dev}: auto -> none ({dt}: {e})")
            continue
        why = []
        for name, b in _backends.backends(op).items():
            if name == "reference" or b.priority.get(dev, -1) < 0 or b.reasons(device, dtype):
                continue
            rec = evidence.op_record(dclass, op, name, dtype)
            if rec is None:
                why.append(
                    f"{name}: not measured on {dclass} (python bench/op_evidence.py --record)"
                )
                continue
            best = max(rec["rows"], key=lambda r: r["size"])
            at = f"{best['speedup']:.2f}x the reference at work size {best['size']:,}"
            when = f"from work size {rec['min_size']:,}" if rec["min_size"] is not None else "never"
            why.append(f"{name}: {at} ({rec['device']}, {rec['date']}): auto {when}")
        chosen = big if small == big else f"{small} below the measured crossover, {big} above"
        out.append(f"  {dev}: auto -> {chosen} ({dt}, {dclass})")
        out += [f"      {w}" for w in why]
    for name, b in _backends.backends(op).items():
        reasons = b.reasons(device, torch.float32)
        if reasons:
            state = "unavailable: " + "; ".join(reasons)
        elif b.priority.get(dev, -1) < 0:
            state = "available when forced (not picked by auto)"
        else:
            state = f"available (priority {b.priority[dev]})"
        out.append(f"    {name:<10} {state}")
    return out


def _step_lines(devices: list[str]) -> list[str]:
    """What train.step=auto runs per method (precision auto), from the evidence record."""
    from . import evidence, methods
    from .step import uses_bf16

    out = [f"\ntraining step (train.step=auto; record: {evidence.PATH.name}):"]
    for dev in devices:
        device = torch.device(dev)
        dclass = evidence.device_class(device)
        precision = "bf16" if uses_bf16(device, "auto") else "fp32"
        out.append(f"  {dev} ({dclass}, precision auto -> {precision}):")
        for name in methods.names():
            fast, why = evidence.step_verdict(dclass, name, precision)
            out.append(f"    {name:<8} {'compiled' if fast else 'eager'}: {why}")
    return out


def _attention_lines(devices: list[str]) -> list[str]:
    from .nn import attention

    out = ["\nattention (model.attn_backend; bf16 on CUDA, fp32 on CPU):"]
    for dev in devices:
        dtype = torch.bfloat16 if dev == "cuda" else torch.float32
        out.append(f"  {dev}: auto -> {attention.resolve('auto', torch.device(dev), dtype, 64)}")
        for name in attention.BACKENDS:
            why = attention.reasons(name, torch.device(dev), dtype)
            out.append(
                f"    {name:<10} " + ("unavailable: " + "; ".join(why) if why else "available")
            )
    return out


def _export_lines() -> list[str]:
    from .export import FORMATS, unavailable

    out = ["\nexport formats (python -m arcdae_fast.export):"]
    for f in FORMATS:
        why = unavailable(f)
        out.append(f"    {f:<10} " + ("unavailable: " + why if why else "available"))
    return out


def keys(method: str = "arcdae") -> str:
    """Every config key for `method`: dotted name, type, default, meaning."""
    from .config.load import key_table

    rows = key_table(method)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {t:<18} {d!r:<22} {doc}".rstrip() for k, t, d, doc in rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m arcdae_fast.info", description=__doc__)
    p.add_argument("--keys", nargs="?", const="arcdae", metavar="METHOD", help="list config keys")
    logs.add_flags(p)
    a = p.parse_args(argv)
    if a.keys:
        from . import methods

        if a.keys not in methods.names():
            p.error(f"unknown method {a.keys!r}; methods: {', '.join(methods.names())}")
        print(keys(a.keys))
        return 0
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
