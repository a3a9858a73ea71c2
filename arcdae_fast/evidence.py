"""What was measured on each device class, in one record that the automatic choices read.

`arcdae_fast/evidence.json` holds, per device class (`device_class`: the CPU's vector and
bf16 features, or the GPU's compute capability):

- `steps`: the verdicts of bench/step_agreement.py: for each method and precision, whether
  the compiled step trained the same model as the eager step and how fast it ran against it.
  `train.step=auto` (step.choose_step) takes the compiled step only where that record says
  it agreed and ran at least MIN_SPEEDUP x the eager step;
- `ops`: bench/op_evidence.py's measurements: for each op, fused backend and dtype, its
  fwd+bwd time against the op's reference at a ladder of work sizes, and `min_size`, the
  smallest measured size from which it ran at least MIN_SPEEDUP x the reference at every
  larger one (None: at none). `auto` (ops/_backends.resolve) picks a fused backend only from
  there.

A device class with no record runs the eager step and the reference ops, and the log line /
`python -m arcdae_fast.info` says why. Refresh it on the machine in question with `make
evidence` (both benches with --record) and commit the file.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

PATH = Path(__file__).with_name("evidence.json")
MIN_SPEEDUP = 1.1  # the compiled step must beat the eager one by this much to be chosen


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (read once per process)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((ln for ln in f if ln.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def device_class(device: torch.device) -> str:
    """cuda-sm90 (compute capability), or cpu-amx / cpu-avx512bf16 / cpu-avx512 / cpu-avx2 /
    cpu-other: what decides which code is fast and how bf16 is computed."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}"
    flags = cpu_flags()
    for flag, name in (
        ("amx_bf16", "cpu-amx"),
        ("avx512_bf16", "cpu-avx512bf16"),
        ("avx512f", "cpu-avx512"),
        ("avx2", "cpu-avx2"),
    ):
        if flag in flags:
            return name
    return "cpu-other"


def load() -> dict[str, Any]:
    if not PATH.is_file():
        return {}
    return json.loads(PATH.read_text())


@functools.cache
def _ops_of(dclass: str) -> dict[str, Any]:
    return load().get(dclass, {}).get("ops", {})


def forget() -> None:
    """Drop what was read (after the file changed: a record, a test's own file)."""
    _ops_of.cache_clear()


def op_record(dclass: str, op: str, backend: str, dtype: torch.dtype) -> dict[str, Any] | None:
    """bench/op_evidence.py's record of a fused backend of `op` at `dtype` on a device class
    (min_size, rows of size / reference ms / backend ms / speed-up, device, date), or None."""
    return _ops_of(dclass).get(op, {}).get(backend, {}).get(str(dtype).replace("torch.", ""))


def op_min_size(dclass: str, op: str, backend: str, dtype: torch.dtype) -> int | None:
    """The smallest work size from which `auto` may pick the fused backend (None: never)."""
    rec = op_record(dclass, op, backend, dtype)
    return None if rec is None else rec["min_size"]


def record_ops(dclass: str, records: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Store bench/op_evidence.py's records ({op: {backend: {dtype: record}}}) for a class,
    replacing what was there for those (op, backend, dtype)."""
    data = load()
    ops = data.setdefault(dclass, {}).setdefault("ops", {})
    for op, by_backend in records.items():
        for backend, by_dtype in by_backend.items():
            ops.setdefault(op, {}).setdefault(backend, {}).update(by_dtype)
    PATH.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    forget()


def step_verdict(dclass: str, method: str, precision: str) -> tuple[bool, str]:
    """(compiled step chosen?, why) for a method at a precision (fp32 | bf16) on a class."""
    entry = load().get(dclass, {}).get("steps", {}).get(method, {}).get(precision)
    if entry is None:
        return False, (
            f"no step-agreement record for {method} {precision} on {dclass} "
            "(python bench/step_agreement.py --record measures one)"
        )
    where = f"on {dclass} ({entry['device']}, {entry['date']})"
    presets = entry.get("presets", {})
    if not entry["ok"]:
        failed = [p for p, r in presets.items() if not r["ok"]]
        at = f" at preset {', '.join(failed)}" if failed else ""
        return False, f"the compiled {precision} step failed step agreement{at} {where}"
    speed = entry.get("speedup")
    if speed is None:  # measured on a busy machine: not evidence of speed
        return False, (
            f"the compiled {precision} step agreed {where}, but its speed was not measured on "
            "a quiet machine (python bench/step_agreement.py --record there)"
        )
    slowest = f" at preset {entry['slowest']}" if entry.get("slowest") else ""
    if speed < MIN_SPEEDUP:
        return False, (
            f"the compiled {precision} step agreed but ran {speed:.2f}x the eager one"
            f"{slowest} {where}, below {MIN_SPEEDUP}x"
        )
    return True, (
        f"the compiled {precision} step agreed and ran {speed:.2f}x the eager one{slowest} {where}"
    )


def record_steps(dclass: str, results: dict[str, dict], env: dict[str, Any]) -> None:
    """Store bench/step_agreement.py's verdicts per method and precision: each preset's row
    (ok, speed-up, steps, seeds, commit) under `presets`; a record of another date is replaced, one
    of the same date keeps its other presets. The verdict: ok when every preset passed, the
    speed-up the smallest of theirs (`slowest` names that preset)."""
    data = load()
    steps = data.setdefault(dclass, {}).setdefault("steps", {})
    for preset, item in results.items():
        method, rows = item["method"], item["rows"]
        for precision in ("fp32", "bf16"):
            r = rows.get(f"compiled-{precision}")
            if r is None:
                continue
            old = steps.setdefault(method, {}).get(precision) or {}
            same_day = old.get("date") == env["date"] and isinstance(old.get("presets"), dict)
            presets = dict(old["presets"]) if same_day else {}
            presets[preset] = {
                "ok": bool(r.get("ok")),
                "speedup": r.get("speedup_vs_eager", 0.0),
                "steps": env["steps"],
                "seeds": env.get("seeds", 1),
                "commit": env["commit"],
            }
            timed = all(v["speedup"] is not None for v in presets.values())
            slowest = min(presets, key=lambda p: presets[p]["speedup"]) if timed else None
            steps[method][precision] = {
                "ok": all(v["ok"] for v in presets.values()),
                "speedup": presets[slowest]["speedup"] if timed else None,
                "slowest": slowest,
                "presets": presets,
                "device": env["device"],
                "date": env["date"],
            }
    PATH.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
