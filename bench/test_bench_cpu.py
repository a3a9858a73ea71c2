"""CPU-meaningful benchmark cases for pytest-benchmark:

    pip install pytest-benchmark && pytest bench/ --benchmark-only
Each op at a small CPU shape, eager reference vs torch.compile of it (plus any fast backend
that `auto` would pick on CPU), fwd+bwd where differentiable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("pytest_benchmark")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_attn_pool  # noqa: E402
import bench_augment  # noqa: E402
import bench_infonce  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("provider", list(bench_infonce.providers(CPU, torch.float32)))
def test_infonce_fwd_bwd(benchmark, provider):
    backend = bench_infonce.providers(CPU, torch.float32)[provider]
    fwd, bwd = bench_infonce.make_case(
        2048, 128, torch.float32, CPU, backend, provider == "naive-compiled"
    )
    benchmark(lambda: bwd(fwd(), retain=False))


@pytest.mark.parametrize("provider", list(bench_attn_pool.providers(CPU, torch.float32)))
def test_attn_pool_fwd_bwd(benchmark, provider):
    kind, arg = bench_attn_pool.providers(CPU, torch.float32)[provider]
    if kind == "skip":
        pytest.skip(arg)
    fwd, bwd = bench_attn_pool.make_case((32, 64, 256, 8, 64), torch.float32, CPU, kind, arg)
    benchmark(lambda: bwd(fwd(), retain=False))


@pytest.mark.parametrize("provider", list(bench_augment.providers(CPU, torch.float32)))
def test_augment_fwd(benchmark, provider):
    backend, compiled, draw = bench_augment.providers(CPU, torch.float32)[provider]
    fwd, _ = bench_augment.make_case((32, 64, 64), torch.float32, CPU, backend, compiled, draw)
    benchmark(fwd)
