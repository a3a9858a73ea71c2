"""Benchmark attention_pool: the eager reference, torch.compile of it, the SDPA formulation
(project keys, then scaled_dot_product_attention), flash-attn / xformers when importable, and
the fast backends; fwd / bwd / fwd+bwd.

    python bench/bench_attn_pool.py                # GPU: B=256, N=256, C=512, K=8 bf16
    python bench/bench_attn_pool.py --device cpu   # CPU: B=32, N=64, C=256, K=8 fp32
Bandwidth counts the bytes the op must move: forward reads x and writes out; backward reads
x and dout and writes dx (parameters and the (B, K) statistics are negligible).
"""

from __future__ import annotations

import importlib.util
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

from arcdae_fast.ops import attention_pool  # noqa: E402

OP = "attn_pool"


def sdpa_pool(x, query, key_weight):
    keys = x @ key_weight.to(x.dtype).T
    q = query.to(x.dtype).expand(x.shape[0], *query.shape)
    return F.scaled_dot_product_attention(q, keys, x)


def xformers_pool(x, query, key_weight):
    import xformers.ops as xops

    keys = (x @ key_weight.to(x.dtype).T).unsqueeze(2)
    q = query.to(x.dtype).expand(x.shape[0], *query.shape).unsqueeze(2)
    return xops.memory_efficient_attention(q.contiguous(), keys, x.unsqueeze(2)).squeeze(2)


def providers(device, dtype) -> dict:
    out = {
        "reference-eager": ("op", "reference"),
        "reference-compiled": ("op-compiled", "reference"),
        "sdpa": ("fn", sdpa_pool),
    }
    if importlib.util.find_spec("xformers") is not None and device.type == "cuda":
        out["xformers"] = ("fn", xformers_pool)
    if importlib.util.find_spec("flash_attn") is not None:
        out["flash-attn"] = ("skip", "flash-attn needs equal q/k/v head sizes (Dk=64 != C)")
    return out | {name: ("op", name) for name in fast_backends(OP, device, dtype)}


def make_case(shape, dtype, device, kind, arg):
    b, n, c, k, dk = shape
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(b, n, c, device=device, generator=g).to(dtype).requires_grad_()
    q = torch.randn(k, dk, device=device, generator=g).requires_grad_()
    w = (torch.randn(dk, c, device=device, generator=g) / c**0.5).requires_grad_()
    if kind == "fn":
        f = arg
    else:

        def f(x, q, w):
            return attention_pool(x, q, w, backend=arg)

        if kind == "op-compiled":
            f = torch.compile(f)
    dout = torch.randn(b, k, c, device=device, generator=g).to(dtype)

    def fwd():
        return f(x, q, w)

    def bwd(out, retain: bool):
        x.grad = q.grad = w.grad = None
        out.backward(dout, retain_graph=retain)

    return fwd, bwd


def main(argv=None) -> None:
    p = base_parser(__doc__)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = (
        getattr(torch, a.dtype)
        if a.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    # GPU: the target's shape; CPU: the FFHQ-128 part head (4x4 tokens of 512 channels, K=8)
    # and a longer token set
    shapes = (
        [(4, 16, 32, 8, 16)]
        if a.quick
        else [(256, 256, 512, 8, 64)]
        if device.type == "cuda"
        else [(128, 16, 512, 8, 64), (32, 64, 256, 8, 64)]
    )
    es = torch.finfo(dtype).bits // 8
    dt = str(dtype).replace("torch.", "")
    roof = measure_roofline(device, ())
    print(f"roofline on {device}: {roof.gbps:.0f} GB/s copy")
    rows: list[Row] = []
    for shape in shapes:
        b, n, c, k, _ = shape

        def metric(mode, ms, b=b, n=n, c=c, k=k):
            fwd_bytes, bwd_bytes = (b * n * c + b * k * c) * es, (2 * b * n * c + b * k * c) * es
            nbytes = {"fwd": fwd_bytes, "bwd": bwd_bytes, "fwd+bwd": fwd_bytes + bwd_bytes}[mode]
            gbps = nbytes / ms / 1e6
            return "GB/s", gbps, gbps / roof.gbps

        label = "B={},N={},C={},K={},Dk={}".format(*shape)
        for prov, (kind, arg) in select(providers(device, dtype), a.providers).items():
            if kind == "skip":
                rows.append(Row("attn_pool", prov, "-", label, dt, None, note=arg))
                continue
            try:
                fwd, bwd = make_case(shape, dtype, device, kind, arg)
                rows += run_modes(
                    "attn_pool",
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
            except (RuntimeError, NotImplementedError) as e:  # a peer rejecting the shapes
                rows.append(
                    Row(
                        "attn_pool",
                        prov,
                        "-",
                        label,
                        dt,
                        None,
                        note=f"failed: {str(e).splitlines()[0][:80]}",
                    )
                )
    report(rows, device, a.out, "attn_pool")


if __name__ == "__main__":
    main()
