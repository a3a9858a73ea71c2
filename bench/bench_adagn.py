"""Benchmark AdaGN = SiLU((GroupNorm(x) (1 + scale) + shift)(1 + zscale)), fwd / bwd / fwd+bwd:
eager GroupNorm + SiLU (the baseline of the target: less work than AdaGN), the eager reference
AdaGN, torch.compile of it, and the fused backends (cpp on CPU, cuda on GPU).

    python bench/bench_adagn.py                    # GPU: B=64, C=256, 32x32 bf16 channels_last
    python bench/bench_adagn.py --device cpu       # CPU: B=32, C=128, 32x32 fp32 NCHW
Bandwidth counts the bytes the op must move: forward reads x and writes y; backward reads x
and dy and writes dx (the (B, C) parameters are negligible).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

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

from arcdae_fast.ops import adagn  # noqa: E402

OP = "adagn"


def gn_silu(x, w, b, s, sh, z, groups):
    return F.silu(F.group_norm(x, groups, w, b))


def providers(device, dtype) -> dict:
    out = {
        "eager-gn-silu": (gn_silu, False),
        "reference-eager": ("reference", False),
        "reference-compiled": ("reference", True),
    }
    return out | {name: (name, False) for name in fast_backends(OP, device, dtype)}


def make_case(shape, dtype, device, how, compiled, channels_last):
    b, c, h, w, g = shape
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(b, c, h, w, device=device, generator=gen).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    ps = [
        torch.randn(*s, device=device, generator=gen).requires_grad_()
        for s in ((c,), (c,), (b, c), (b, c), (b, c))
    ]
    dy = torch.randn_like(x)
    if callable(how):
        f = how
    else:

        def f(x, w, bb, s, sh, z, groups):
            return adagn(x, w, bb, s, sh, z, groups=groups, backend=how)

    if compiled:
        f = torch.compile(f)

    def fwd():
        return f(x, *ps, g)

    def bwd(out, retain: bool):
        x.grad = None
        for p in ps:
            p.grad = None
        out.backward(dy, retain_graph=retain)

    return fwd, bwd


def main(argv=None) -> None:
    p = base_parser(__doc__)
    p.add_argument(
        "--channels-last", action=__import__("argparse").BooleanOptionalAction, default=None
    )
    a = p.parse_args(argv)
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    dtype = getattr(torch, a.dtype) if a.dtype else (torch.bfloat16 if gpu else torch.float32)
    cl = a.channels_last if a.channels_last is not None else gpu
    shape = (2, 16, 8, 8, 4) if a.quick else (64, 256, 32, 32, 32) if gpu else (32, 128, 32, 32, 32)
    b, c, h, w, _ = shape
    es = torch.finfo(dtype).bits // 8
    roof = measure_roofline(device, ())
    print(f"roofline on {device}: {roof.gbps:.0f} GB/s copy")
    n = b * c * h * w

    def metric(mode, ms):
        nbytes = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}[mode] * n * es
        gbps = nbytes / ms / 1e6
        return "GB/s", gbps, gbps / roof.gbps

    rows: list[Row] = []
    label = "B={},C={},{}x{},G={}".format(*shape[:2], *shape[2:4], shape[4]) + (
        ",NHWC" if cl else ""
    )
    for prov, (how, compiled) in select(providers(device, dtype), a.providers).items():
        fwd, bwd = make_case(shape, dtype, device, how, compiled, cl)
        rows += run_modes(
            "adagn",
            prov,
            fwd,
            bwd,
            a.modes.split(","),
            label,
            dtype,
            device,
            metric=metric,
            memory=not a.no_memory,
        )
    report(rows, device, a.out, "adagn")


if __name__ == "__main__":
    main()
