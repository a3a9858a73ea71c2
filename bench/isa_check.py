"""The C++ CPU kernels built for one instruction set only, timed against the eager reference
in one process: shows what the AVX2 clone of the extension does on a machine whose CPU would
pick the AVX-512 one (the normal build's clones are chosen by the CPU at load time).

    python bench/isa_check.py avx2       # then: avx512f
Builds csrc/ with -DARCDAE_ONE_ISA=<isa> under torch's extension cache (a minute or two),
then times AdaGN forward+backward (B=32, C=128, 32x32, G=32, fp32, NCHW) against
arcdae_fast.ops.adagn.adagn_reference with autograd, median of interleaved rounds.
"""

from __future__ import annotations

import glob
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    isa = sys.argv[1] if len(sys.argv) > 1 else "avx2"
    srcs = [str(ROOT / "csrc/ops.cpp"), *sorted(glob.glob(str(ROOT / "csrc/cpu/*.cpp")))]
    flags = ["-O3", "-Wno-psabi", "-fopenmp", f"-DARCDAE_ONE_ISA={isa}"]
    name = "arcdae_isa_" + isa.replace("-", "_").replace(",", "_")
    load(
        name=name,
        sources=srcs,
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
    )
    from arcdae_fast.ops.adagn import adagn_reference

    torch.manual_seed(0)
    B, C, H, W, G = 32, 128, 32, 32, 32
    x = torch.randn(B, C, H, W)
    w, b = torch.randn(C), torch.randn(C)
    sc, sh, z = torch.randn(B, C), torch.randn(B, C), torch.randn(B, C)
    op = torch.ops.arcdae_fast_C

    def fused():
        y, m, r, s = op.adagn_forward(x, w, b, sc, sh, z, G, 1e-5)
        op.adagn_backward(y, x, w, b, sc, sh, z, m, r, s, G)

    xr = x.clone().requires_grad_()

    def reference():
        y = adagn_reference(xr, w, b, sc, sh, z, G, 1e-5)
        y.backward(y.detach())

    times: dict[str, list[float]] = {"fused": [], "reference": []}
    for fn in (fused, reference):
        fn()
    for _ in range(15):  # interleaved rounds: both see the same machine load
        for label, fn in (("fused", fused), ("reference", reference)):
            t0 = time.perf_counter()
            fn()
            times[label].append(1e3 * (time.perf_counter() - t0))
    f, r = (statistics.median(times[k]) for k in ("fused", "reference"))
    print(f"{isa}: C++ AdaGN fwd+bwd {f:.2f} ms, eager reference {r:.2f} ms, ratio {r / f:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
