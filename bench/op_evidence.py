"""Which fused op backends beat the reference on this device class, and from which work size:
the evidence that `auto` (arcdae_fast/ops/_backends.resolve) reads.

    python bench/op_evidence.py                 # measure and print (nothing recorded)
    python bench/op_evidence.py --record        # also write arcdae_fast/evidence.json
    python bench/op_evidence.py --ops adagn --dtypes float32 --rounds 3 --quick
    python bench/op_evidence.py --record-from steps.jsonl      # a GPU check's file, back here

For every op with a fused backend that `auto` may pick on this device (cpp on CPU; cuda and
triton on GPUs), at float32 and (where the device computes it natively) bfloat16, and at a
ladder of the shapes the presets run (the quickstart U-Net's AdaGN layers at batch 32, its
part head, the batch's InfoNCE, the augmentation of a batch): fwd+bwd time (the augmentation:
forward; it has no backward) of the reference and of each fused backend, in interleaved rounds
(the machine is shared and noisy), median per round, speed-up = reference / fused per round,
its median over rounds. `min_size`: the smallest measured work size from which the backend ran
at least evidence.MIN_SPEEDUP x the reference at every larger measured size (None: nowhere).
Writes bench/results/op_evidence_<device class>.md (the table, with the CPU or GPU and the
command) and .json (the records), or with --out FILE appends the records as one JSON line to
FILE (bench/gpu_check.sh: its steps.jsonl); --record-from writes such a file's records into
the evidence file (the GPU check measures on a GPU machine, the file comes back here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_adagn  # noqa: E402
import bench_attn_pool  # noqa: E402
import bench_augment  # noqa: E402
import bench_infonce  # noqa: E402
from common import RESULTS, device_name, git_commit, time_ms, versions  # noqa: E402

from arcdae_fast import evidence  # noqa: E402
from arcdae_fast.ops import _backends  # noqa: E402
from arcdae_fast.step import native_bf16  # noqa: E402


def _adagn(shape, dtype, device, backend):
    return bench_adagn.make_case(shape, dtype, device, backend, False, False)


def _attn_pool(shape, dtype, device, backend):
    return bench_attn_pool.make_case(shape, dtype, device, "op", backend)


def _infonce(shape, dtype, device, backend):
    return bench_infonce.make_case(*shape, dtype, device, backend, False)


def _augment(shape, dtype, device, backend):
    return bench_augment.make_case(shape, dtype, device, backend, False, False)


# op -> (case builder, work size of a shape (what the op passes to resolve), shape ladder)
CASES = {
    "adagn": (  # (B, C, H, W, groups): the quickstart U-Net's levels at batch 32
        _adagn,
        lambda s: s[0] * s[1] * s[2] * s[3],
        [(32, 64, 4, 4, 32), (32, 128, 4, 4, 32), (32, 64, 8, 8, 32), (32, 128, 8, 8, 32)]
        + [(32, 64, 16, 16, 32), (32, 128, 16, 16, 32), (32, 64, 32, 32, 32)]
        + [(32, 128, 32, 32, 32)],
    ),
    "attn_pool": (  # (B, tokens, C, K, d_k): part heads from quickstart to FFHQ-128
        _attn_pool,
        lambda s: s[0] * s[1] * s[2],
        [(32, 16, 128, 8, 64), (32, 16, 512, 8, 64), (32, 64, 256, 8, 64), (32, 256, 256, 8, 64)],
    ),
    "infonce": (  # (N, D): the batch's codes
        _infonce,
        lambda s: s[0] * s[0] * s[1],
        [(32, 128), (64, 512), (256, 512), (1024, 512)],
    ),
    "augment": (  # (B, H, W): a batch at the presets' resolutions
        _augment,
        lambda s: s[0] * 3 * s[1] * s[2],
        [(32, 16, 16), (32, 32, 32), (32, 64, 64), (32, 128, 128)],
    ),
}
QUICK = {op: ladder[:2] for op, (_, _, ladder) in CASES.items()}


def candidates(op: str, device: torch.device, dtype: torch.dtype) -> list[str]:
    """The fused backends `auto` may pick here (priority >= 0, runnable)."""
    return [
        name
        for name, b in _backends.backends(op).items()
        if name != "reference"
        and b.priority.get(device.type, -1) >= 0
        and not b.reasons(device, dtype)
    ]


def one_call(fwd, bwd):
    def call():
        out = fwd()
        if bwd is not None:
            bwd(out[0] if isinstance(out, tuple) else out, False)

    return call


def measure(op, device, dtype, names, shapes, rounds, min_time) -> list[dict]:
    build, size_of, _ = CASES[op]
    rows = []
    for shape in shapes:
        calls = {n: one_call(*build(shape, dtype, device, n)) for n in ["reference", *names]}
        times: dict[str, list[float]] = {n: [] for n in calls}
        for _ in range(rounds):  # interleaved: noise falls on every backend alike
            for n, call in calls.items():
                times[n].append(time_ms(call, device, min_time=min_time))
        for n in names:
            ratios = [r / f for r, f in zip(times["reference"], times[n])]
            rows.append(
                {
                    "backend": n,
                    "shape": list(shape),
                    "size": size_of(shape),
                    "reference_ms": statistics.median(times["reference"]),
                    "backend_ms": statistics.median(times[n]),
                    "speedup": statistics.median(ratios),
                }
            )
    return rows


def min_size(rows: list[dict]) -> int | None:
    """The smallest size from which every measured size has speed-up >= MIN_SPEEDUP."""
    by_size: dict[int, float] = {}
    for r in rows:  # two shapes of one size: the worse counts
        by_size[r["size"]] = min(by_size.get(r["size"], float("inf")), r["speedup"])
    found = None
    for size in sorted(by_size, reverse=True):
        if by_size[size] < evidence.MIN_SPEEDUP:
            break
        found = size
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ops", default=",".join(CASES))
    p.add_argument("--dtypes", default="", help="default: float32, and bfloat16 where native")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timing")
    p.add_argument("--quick", action="store_true", help="two shapes per op (smoke test)")
    p.add_argument("--record", action="store_true", help="write arcdae_fast/evidence.json")
    p.add_argument("--out", type=Path, default=None, help="append the records to this file")
    p.add_argument("--record-from", type=Path, default=None, help="record a run's .json")
    p.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.record_from:
        lines = [json.loads(ln) for ln in a.record_from.read_text().splitlines() if ln.strip()]
        for saved in (x for x in lines if "records" in x):
            evidence.record_ops(saved["device_class"], saved["records"])
            print(f"recorded {a.record_from} ({saved['device_class']}) in {evidence.PATH}")
        return
    device = torch.device(a.device)
    dclass = evidence.device_class(device)
    dtypes = [getattr(torch, d) for d in a.dtypes.split(",") if d] or (
        [torch.float32] + ([torch.bfloat16] if native_bf16(device) else [])
    )
    env = {
        "device": device_name(device),
        "date": time.strftime("%Y-%m-%d"),
        "commit": git_commit(),
        **versions(),
    }
    print(f"{env['device']} ({dclass}); speed-up needed: {evidence.MIN_SPEEDUP}x", flush=True)
    records: dict[str, dict[str, dict]] = {}
    md = [
        "| op | backend | dtype | shape | work size | reference ms | backend ms | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for op in a.ops.split(","):
        shapes = QUICK[op] if a.quick else CASES[op][2]
        for dtype in dtypes:
            names = candidates(op, device, dtype)
            if not names:
                continue
            rows = measure(op, device, dtype, names, shapes, a.rounds, a.min_time)
            dt = str(dtype).replace("torch.", "")
            for n in names:
                mine = [r for r in rows if r["backend"] == n]
                rec = {"min_size": min_size(mine), "rows": mine, **env}
                records.setdefault(op, {}).setdefault(n, {})[dt] = rec
                for r in mine:
                    md.append(
                        f"| {op} | {n} | {dt} | {tuple(r['shape'])} | {r['size']:,} | "
                        f"{r['reference_ms']:.3f} | {r['backend_ms']:.3f} | {r['speedup']:.2f}x |"
                    )
                when = f"from {rec['min_size']:,}" if rec["min_size"] is not None else "never"
                print(f"{op} {n} {dt}: auto {when}", flush=True)
    summary = [
        f"- {op} {n} {dt}: auto picks it "
        + (f"from work size {r['min_size']:,}" if r["min_size"] is not None else "nowhere")
        for op, by_n in records.items()
        for n, by_dt in by_n.items()
        for dt, r in by_dt.items()
    ]
    text = [
        f"# Op evidence on {dclass} ({env['date']})",
        "",
        f"{env['device']}, torch {env['torch']}, commit {env['commit']}; fwd+bwd (augment: "
        f"fwd), median of {a.rounds} interleaved rounds; a fused backend is picked by `auto` "
        f"from the smallest size where it and every larger size ran >= {evidence.MIN_SPEEDUP}x "
        f"the reference. Command: `python bench/op_evidence.py {' '.join(argv or sys.argv[1:])}`",
        "",
        *summary,
        "",
        *md,
        "",
    ]
    saved = {"device_class": dclass, "records": records}
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(saved) + "\n")
        print(f"appended the records to {a.out}")
    else:
        a.results.mkdir(parents=True, exist_ok=True)
        out = a.results / f"op_evidence_{dclass}.md"
        out.write_text("\n".join(text))
        out.with_suffix(".json").write_text(json.dumps(saved, indent=1) + "\n")
        print(f"wrote {out} and its .json")
    if a.record:
        evidence.record_ops(dclass, records)
        print(f"recorded in {evidence.PATH}")


if __name__ == "__main__":
    main()
