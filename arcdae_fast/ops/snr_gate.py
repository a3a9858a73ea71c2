"""TGA gate omega = SNR^(1/tau) / (1 + SNR^(1/tau)) (SPEC section 4), computed stably."""

from __future__ import annotations

import torch

from ._validate import check_positive, check_tensor

OP = "snr_gate"


def snr_gate(snr: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """omega = sigmoid(log(snr) / tau), elementwise, any shape.

    Written through log SNR so that neither SNR^(1/tau) nor 1 + SNR^(1/tau) is ever formed:
    no overflow for huge SNR (omega -> 1) and exact 0 at SNR = 0 (omega -> 0). Values are not
    checked on the device (that would cost a host sync): a negative SNR gives NaN.
    Low-precision inputs are computed in float32 and returned in their own dtype.

    Equivalent PyTorch: ``snr ** (1 / tau) / (1 + snr ** (1 / tau))``.
    """
    check_tensor(OP, "snr", snr)
    tau = check_positive(OP, "tau", tau)
    ct = torch.float64 if snr.dtype == torch.float64 else torch.float32
    return gate_from_log_snr(torch.log(snr.to(ct)), tau).to(snr.dtype)


def gate_from_log_snr(log_snr: torch.Tensor, tau: float) -> torch.Tensor:
    """omega from log SNR directly (what the diffusion schedule uses; no exp/log round trip)."""
    return torch.sigmoid(log_snr / tau)


def snr_gate_reference(snr: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The closed form of SPEC section 4, for tests (overflows where snr_gate does not)."""
    p = snr ** (1.0 / tau)
    return p / (1 + p)
