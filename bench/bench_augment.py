"""Benchmark timestep_augment (augmentation + noising, forward only: a data transform): the
eager reference, torch.compile of it, and the fast backends (also drawing noise in-kernel).

    python bench/bench_augment.py                  # GPU: B=256, 3x128x128 float32
    python bench/bench_augment.py --device cpu     # CPU: B=32, 3x64x64 float32
Bandwidth counts the bytes the op must move: read x and the noise, write x_t and the view
(with in-kernel noise: write the noise instead of reading it) = 4 x B x 3 x H x W elements.
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

from arcdae_fast.ops import sample_augment_params, timestep_augment, timestep_augment_with_noise  # noqa: E402

OP = "augment"


def providers(device, dtype) -> dict:
    out = {
        "reference-eager": ("reference", False, False),
        "reference-compiled": ("reference", True, False),
    }
    for name in fast_backends(OP, device, dtype):
        out[name] = (name, False, False)
        out[f"{name}+noise"] = (name, False, True)
    return out


def make_case(shape, dtype, device, backend, compiled, draw_noise):
    b, h, w = shape
    g = torch.Generator(device=device).manual_seed(0)
    x = (torch.rand(b, 3, h, w, device=device, generator=g) * 2 - 1).to(dtype)
    params = sample_augment_params(torch.rand(b, device=device, generator=g), g)
    alpha = torch.rand(b, device=device, generator=g)
    sigma = (1 - alpha**2).sqrt()
    noise = torch.randn(b, 3, h, w, device=device, generator=g).to(dtype)
    if draw_noise:

        def fwd():
            return timestep_augment_with_noise(x, params, alpha, sigma, seed=1, backend=backend)
    else:

        def f(x, params, alpha, sigma, noise):
            return timestep_augment(x, params, alpha, sigma, noise, backend=backend)

        f = torch.compile(f) if compiled else f

        def fwd():
            return f(x, params, alpha, sigma, noise)

    return fwd, None


def main(argv=None) -> None:
    p = base_parser(__doc__)
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype) if a.dtype else torch.float32
    shape = (4, 16, 16) if a.quick else (256, 128, 128) if device.type == "cuda" else (32, 64, 64)
    b, h, w = shape
    roof = measure_roofline(device, ())
    print(f"roofline on {device}: {roof.gbps:.0f} GB/s copy")

    def metric(mode, ms):
        gbps = 4 * b * 3 * h * w * (torch.finfo(dtype).bits // 8) / ms / 1e6
        return "GB/s", gbps, gbps / roof.gbps

    rows: list[Row] = []
    label = f"B={b},3x{h}x{w}"
    for prov, (backend, compiled, draw) in select(providers(device, dtype), a.providers).items():
        fwd, _ = make_case(shape, dtype, device, backend, compiled, draw)
        rows += run_modes(
            "augment",
            prov,
            fwd,
            None,
            ["fwd"],
            label,
            dtype,
            device,
            metric=metric,
            memory=not a.no_memory,
        )
    report(rows, device, a.out, "augment")


if __name__ == "__main__":
    main()
