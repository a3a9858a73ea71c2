"""Benchmark snr_weighted_infonce: naive PyTorch (the reference: normalize, matmul,
cross-entropy), torch.compile of it, and the fast backends, in fwd / bwd / fwd+bwd.

    python bench/bench_infonce.py                  # GPU: N=16384, D=128 bf16 (+ N=262144)
    python bench/bench_infonce.py --device cpu     # CPU: N=8192, D=128 fp32
FLOPs counted as the useful work: 2 N^2 D forward, 4 N^2 D backward (x2 when symmetric).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Row,
    base_parser,
    fast_backends,
    measure_roofline,
    report,
    run_modes,
    select,
)

from arcdae_fast.ops import snr_weighted_infonce  # noqa: E402

OP = "infonce"


def providers(device: torch.device, dtype: torch.dtype) -> dict[str, str]:
    """provider name -> backend argument (compiled uses the reference under torch.compile)."""
    out = {"naive-eager": "reference", "naive-compiled": "reference"}
    return out | {name: name for name in fast_backends(OP, device, dtype)}


def make_case(
    n: int, d: int, dtype: torch.dtype, device: torch.device, backend: str, compiled: bool
):
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(n, d, device=device, generator=g).to(dtype).requires_grad_()
    k = torch.randn(n, d, device=device, generator=g).to(dtype).requires_grad_()
    w = torch.rand(n, device=device, generator=g)

    def loss(q, k):
        return snr_weighted_infonce(q, k, w, 0.1, backend=backend)

    f = torch.compile(loss) if compiled else loss

    def fwd():
        return f(q, k)

    def bwd(out, retain: bool):
        q.grad = k.grad = None
        out.backward(retain_graph=retain)

    return fwd, bwd


def flops_metric(n: int, d: int, peak: float):
    def metric(mode: str, ms: float) -> tuple[str, float, float]:
        tf = {"fwd": 2, "bwd": 4, "fwd+bwd": 6}[mode] * n * n * d / ms / 1e9
        return "TFLOP/s", tf, tf / peak

    return metric


def oom_row(prov: str, n: int, d: int, dtype: torch.dtype, e: Exception) -> Row:
    torch.cuda.empty_cache()
    return Row(
        "infonce",
        prov,
        "fwd+bwd",
        f"N={n},D={d}",
        str(dtype).replace("torch.", ""),
        None,
        note=f"OOM ({str(e).splitlines()[0][:60]})",
    )


def main(argv=None) -> None:
    p = base_parser(__doc__)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--d", type=int, default=128)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = (
        getattr(torch, a.dtype)
        if a.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    n = a.n or (256 if a.quick else 16384 if device.type == "cuda" else 8192)
    d = 32 if a.quick else a.d
    modes = a.modes.split(",")
    roof = measure_roofline(device, (dtype,))
    peak = roof.tflops[str(dtype).replace("torch.", "")]
    print(f"roofline on {device}: {roof.gbps:.0f} GB/s copy, {peak:.2f} TFLOP/s matmul ({dtype})")

    metric = flops_metric(n, d, peak)
    rows: list[Row] = []
    chosen = select(providers(device, dtype), a.providers)
    for prov, backend in chosen.items():
        try:
            fwd, bwd = make_case(n, d, dtype, device, backend, prov == "naive-compiled")
            rows += run_modes(
                "infonce",
                prov,
                fwd,
                bwd,
                modes,
                f"N={n},D={d}",
                dtype,
                device,
                metric=metric,
                memory=not a.no_memory,
            )
        except torch.OutOfMemoryError as e:
            rows.append(oom_row(prov, n, d, dtype, e))
    if device.type == "cuda" and not a.quick:  # the scale the naive form cannot reach
        big = 262144
        for prov in [p for p in chosen if not p.startswith("naive")] + ["naive-eager"]:
            try:
                fwd, bwd = make_case(big, d, dtype, device, chosen[prov], False)
                rows += run_modes(
                    "infonce",
                    prov,
                    fwd,
                    bwd,
                    ["fwd+bwd"],
                    f"N={big},D={d}",
                    dtype,
                    device,
                    metric=flops_metric(big, d, peak),
                )
            except torch.OutOfMemoryError as e:
                rows.append(oom_row(prov, big, d, dtype, e))
    report(rows, device, a.out, "infonce")


if __name__ == "__main__":
    main()
