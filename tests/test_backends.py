import pytest
import torch

from arcdae_fast import kernels
from arcdae_fast.info import report
from arcdae_fast.ops import _backends, _triton, snr_weighted_infonce

CPU = torch.device("cpu")


def test_auto_prefers_reference_on_cpu_and_registry_lists_ops():
    assert {"snr_weighted_infonce", "attention_pool", "timestep_augment", "adagn"} <= set(
        _backends.ops()
    )
    for op in _backends.ops():
        assert _backends.resolve(op, "auto", CPU, torch.float32).name == "reference"


def test_forced_backend_that_cannot_run_lists_reasons():
    with pytest.raises(
        RuntimeError,
        match=r"backend 'triton' \(from argument 'backend'\) "
        r"cannot run on cpu/float64: dtype float64",
    ):
        _backends.resolve("snr_weighted_infonce", "triton", CPU, torch.float64)
    with pytest.raises(RuntimeError, match="device 'mps' not supported|Triton has no backend"):
        _backends.resolve("attention_pool", "triton", torch.device("mps"), torch.float32)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setattr(kernels, "INTERPRET", False)
    assert any("TRITON_INTERPRET=1" in r for r in _triton.reasons("cpu"))
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        snr_weighted_infonce(torch.randn(3, 2), torch.randn(3, 2), backend="triton")


def test_environment_override(monkeypatch):
    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "triton")
    if not kernels.INTERPRET:
        pytest.skip("needs the Triton interpreter on this CPU test machine")
    assert _backends.resolve("attention_pool", "auto", CPU, torch.float32).name == "triton"
    assert _backends.resolve("attention_pool", "reference", CPU, torch.float32).name == (
        "reference"
    )  # an explicit argument wins
    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "attention_pool=reference,timestep_augment=triton")
    assert _backends.resolve("attention_pool", "auto", CPU, torch.float32).name == "reference"
    assert _backends.resolve("timestep_augment", "auto", CPU, torch.float32).name == "triton"
    assert _backends.resolve("adagn", "auto", CPU, torch.float32).name == "reference"
    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "cudnn")
    with pytest.raises(
        ValueError,
        match="unknown backend 'cudnn' \\(from environment variable ARCDAE_FAST_BACKEND\\)",
    ):
        _backends.resolve("adagn", "auto", CPU, torch.float32)


def test_info_reports_every_op_and_reason():
    text = report()
    for op in _backends.ops():
        assert f"{op}:" in text
    assert "cpu: auto -> reference" in text and "torch " in text
