"""Shared fixtures: a tiny model configuration and the bundled dataset at 16 px."""

from __future__ import annotations

import os
from pathlib import Path

# Without a GPU the Triton kernels run under the interpreter (must be set before any kernel
# module is imported). With CUDA they run for real.
try:
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover
    pass

import pytest
import torch
import yaml

# under pytest-xdist (`make test` runs 2 workers) each worker takes one core
torch.set_num_threads(
    1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads())
)


def tiny_raw(root: Path) -> dict:
    """A complete config small enough for CPU tests (a step takes a few ms)."""
    return {
        "data": {
            "dataset": "synthetic",
            "root": str(root),
            "resolution": 16,
            "synthetic_count": 64,
            "synthetic_size": 16,
        },
        "model": {
            "denoiser": {
                "base_channels": 8,
                "channel_mult": [1, 2],
                "num_res_blocks": 1,
                "attn_resolutions": [8],
                "dropout": 0.1,
                "head_channels": 8,
                "max_groups": 4,
            },
            "encoder": {
                "base_channels": 8,
                "channel_mult": [1, 2, 2],
                "num_res_blocks": 1,
                "attn_resolutions": [4],
                "z_dim": 16,
                "head_channels": 8,
                "max_groups": 4,
            },
        },
        "method": {"name": "arcdae", "num_parts": 2, "part_key_dim": 8, "part_dim": 8},
        "train": {
            "batch_size": 8,
            "lr": 1e-3,
            "max_steps": 4,
            "log_every": 1,
            "ckpt_every": 2,
            "sample_every": 2,
            "sample_steps": 2,
            "ema_decay": 0.9,
            "device": "cpu",
            "step": "eager",  # a compile per test would dominate the suite
        },
    }


def compile_raw(root: Path) -> dict:
    """tiny_raw for the tests that compile a whole training step: no dropout, and attention
    only in the middle blocks, one encoder level less. Inductor's CPU code generation is
    single-threaded Python whose time grows with the graph (a cold compile of tiny_raw's
    ArcDAE step took ~4 min on a 2-core AVX2 machine); every block kind (AdaGN ResBlocks,
    resampling, attention, the part pool) is still in the graph."""
    raw = tiny_raw(root)
    raw["model"]["denoiser"].update(dropout=0.0, attn_resolutions=[])
    raw["model"]["encoder"].update(channel_mult=[1, 2], attn_resolutions=[])
    return raw


@pytest.fixture
def compile_config_file(tmp_path: Path, synth_root: Path) -> Path:
    path = tmp_path / "compile.yaml"
    path.write_text(yaml.safe_dump(compile_raw(synth_root)))
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arcdae_fast.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synth", count=64, size=16)


@pytest.fixture
def tiny_config_file(tmp_path: Path, synth_root: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_raw(synth_root)))
    return path


@pytest.fixture
def tiny_cfg(synth_root: Path):
    from arcdae_fast.config import from_dict

    return from_dict(tiny_raw(synth_root))


def random_inception(monkeypatch):
    """torch-fidelity's Inception-V3 with random weights (its constructor loads weights: that
    load is skipped)."""
    from arcdae_fast.eval import fid as fid_mod

    cls = fid_mod._inception_class()
    module = __import__(cls.__module__, fromlist=["x"])
    with monkeypatch.context() as m:
        m.setattr(module, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(cls, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        return cls("inception-v3-compat", ["2048"]).eval()
