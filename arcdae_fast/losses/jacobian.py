"""The explicit ASR Jacobian term (SPEC section 4): L_jac = mean_i sigma_i^2 ||J_i v_i||^2,
J = d fn / d x at the student input, by `hutchinson_penalty`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..ops import hutchinson_penalty


def jacobian_term(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigma: torch.Tensor,
    vectors: torch.Tensor,
    *,
    estimator: str = "fd",
    fd_eps: float = 1e-3,
    fx: torch.Tensor | None = None,
    fp32: bool = True,
) -> torch.Tensor:
    """Scalar float32 L_jac for inputs x (B, ...) at noise levels sigma (B,), with Hutchinson
    probes `vectors` (P, B, ...).

    estimator "fd": fn(x + e v) - fn(x) over e, fn called once on [x, x + e v_1, ...] unless
    fx = fn(x) is given (fn then runs on the P*B perturbed rows only). With `fp32`, fn runs
    with autocast off: e = 1e-3 is below bf16's resolution near 1 (a given fx must come from
    a float32 evaluation too). estimator "jvp": exact forward mode (does not compile)."""
    pen = hutchinson_penalty(
        _autocast_off(fn) if estimator == "fd" and fp32 else fn,
        x,
        estimator=estimator,
        probes=vectors.shape[0],
        fd_eps=fd_eps,
        fx=fx if estimator == "fd" else None,
        vectors=vectors,
    )
    return (sigma.float() ** 2 * pen).mean()


def _autocast_off(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def run(v: torch.Tensor) -> torch.Tensor:
        with torch.autocast(v.device.type, enabled=False):
            return fn(v)

    return run
