import pytest
import torch

from arcdae_fast.ops import snr_gate
from arcdae_fast.ops.snr_gate import snr_gate_reference


def test_matches_closed_form():
    snr = torch.logspace(-4, 4, 50, dtype=torch.float64)
    for tau in (0.5, 1.0, 3.0):
        torch.testing.assert_close(snr_gate(snr, tau), snr_gate_reference(snr, tau))


def test_limits_and_stability():
    snr = torch.tensor([0.0, 1e-30, 1.0, 1e30, float("inf")])
    w = snr_gate(snr, 0.25)  # snr ** 4 would overflow float32
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert torch.isnan(snr_gate_reference(torch.tensor([1e30]), 0.25)).any()


def test_dtype_and_monotone():
    snr = torch.logspace(-3, 3, 20).bfloat16()
    w = snr_gate(snr)
    assert w.dtype == torch.bfloat16 and (w.float().diff() >= 0).all()


def test_bad_inputs():
    with pytest.raises(TypeError, match="'snr'"):
        snr_gate(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="'tau' must be > 0"):
        snr_gate(torch.ones(2), 0.0)
    with pytest.raises(TypeError, match="'snr' must be a torch.Tensor"):
        snr_gate([1.0])
