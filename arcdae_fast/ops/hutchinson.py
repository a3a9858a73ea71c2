"""Hutchinson estimate of the Jacobian's squared Frobenius norm (SPEC section 4, ASR term)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._validate import check_choice, check_nonempty, check_positive, check_tensor

OP = "hutchinson_penalty"
ESTIMATORS = ("fd", "jvp")
PROBES = ("rademacher", "gaussian")


def probe_like(
    x: torch.Tensor, kind: str = "rademacher", generator: torch.Generator | None = None
) -> torch.Tensor:
    """A random probe v with E[v v^T] = I, drawn on the generator's device, returned like x."""
    dev = generator.device if generator is not None else x.device
    if kind == "rademacher":
        v = torch.randint(0, 2, x.shape, generator=generator, device=dev).mul_(2).sub_(1)
    else:
        v = torch.randn(x.shape, generator=generator, device=dev)
    return v.to(device=x.device, dtype=x.dtype)


def hutchinson_penalty(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    estimator: str = "fd",
    probes: int = 1,
    fd_eps: float = 1e-3,
    generator: torch.Generator | None = None,
    probe: str = "rademacher",
    fx: torch.Tensor | None = None,
    vectors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample Hutchinson estimates of Tr(J^T J), J = d fn(x)_i / d x_i, times weight.

    fn maps a batch x (B, ...) to outputs (B, ...) sample by sample. For each of `probes`
    random vectors v (Rademacher by default, or Gaussian; both have E[v v^T] = I),
    ||J v||^2 is an unbiased estimate of Tr(J^T J); the result is their mean, (B,) float32
    (float64 for float64 x), times weight (B,) when given. Differentiable w.r.t. fn's
    parameters (the ASR term).

    estimator "jvp": exact J v by forward-mode AD (torch.func.jvp).
    estimator "fd":  J v ~ (fn(x + e v) - fn(x)) / e with e = fd_eps, difference in float32
                     (float64 for float64 x). fn is called once, on the batch
                     [x, x + e v_1, ..., x + e v_P] ((P+1)B rows; fn must treat rows
                     independently); pass fx = fn(x) if already computed to leave x out.
                     This is the form that compiles (forward-mode AD through GroupNorm
                     does not). x must be float32 or float64 (a float16/bfloat16 x is
                     refused: e = 1e-3 is below its resolution); under bf16 autocast,
                     evaluate fn in float32 as well.
    vectors: optional explicit probes (probes, *x.shape) instead of drawing them (lets two
    implementations be compared on the same probes).

    Equivalent PyTorch (jvp, one probe)::

        v = torch.randint(0, 2, x.shape) * 2 - 1
        jv = torch.func.jvp(fn, (x,), (v.to(x),))[1]
        est = jv.flatten(1).float().pow(2).sum(1) * weight
    """
    if not callable(fn):
        raise TypeError(f"{OP}: argument 'fn' must be callable, got {type(fn).__name__}")
    check_tensor(OP, "x", x)
    if x.dim() < 1:
        raise ValueError(f"{OP}: argument 'x' must have a batch dimension, got shape ()")
    check_nonempty(OP, "x", x)
    b = x.shape[0]
    if weight is not None:
        check_tensor(OP, "weight", weight, shape=(b,), device=x.device)
    check_choice(OP, "estimator", estimator, ESTIMATORS)
    check_choice(OP, "probe", probe, PROBES)
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"{OP}: argument 'probes' must be an int >= 1, got {probes!r}")
    fd_eps = check_positive(OP, "fd_eps", fd_eps)
    if vectors is not None:
        check_tensor(OP, "vectors", vectors, shape=(probes, *x.shape), device=x.device)
    if fx is not None and estimator != "fd":
        raise ValueError(
            f"{OP}: argument 'fx' is only used by estimator 'fd', got estimator={estimator!r}"
        )
    if fx is not None:
        check_tensor(OP, "fx", fx, device=x.device)
    if estimator == "fd" and x.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"{OP}: estimator 'fd' needs x in float32 or float64, got {x.dtype} (a "
            f"perturbation of fd_eps={fd_eps:g} is below its resolution: the estimate would be "
            "wrong); pass x.float() and evaluate fn in float32"
        )

    if vectors is None:
        vectors = torch.stack([probe_like(x, probe, generator) for _ in range(probes)])
    vectors = vectors.to(x.dtype)
    if estimator == "jvp":
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        total = x.new_zeros(b, dtype=ct)
        for v in vectors:
            out, jv = torch.func.jvp(fn, (x,), (v,))
            _check_out(out, b)
            total = total + jv.to(ct).reshape(b, -1).pow(2).sum(1)
        est = total / probes
    else:  # one batched call: [x (unless fx is given), x + e v_1, ..., x + e v_P]
        perturbed = [x + fd_eps * v for v in vectors]
        out = fn(torch.cat(perturbed if fx is not None else [x, *perturbed]))
        _check_out(out, b * (probes + (fx is None)))
        if fx is None:
            fx, out = out[:b], out[b:]
        _check_out(fx, b, name="fx")
        est = fd_estimate(fx, out.reshape(probes, *fx.shape), fd_eps)
    return est if weight is None else est * weight.to(est.dtype)


def fd_estimate(base: torch.Tensor, perturbed: torch.Tensor, fd_eps: float) -> torch.Tensor:
    """Mean over probes of ||(f(x + e v_k) - f(x)) / e||^2 per sample: base (B, ...),
    perturbed (P, B, ...) -> (B,), with the difference taken in float32 (float64 for float64).
    The perturbation must be resolvable in the precision f ran in (e = 1e-3 is below bf16's
    resolution near 1: evaluate f in float32 for this term)."""
    ct = torch.float64 if base.dtype == torch.float64 else torch.float32
    diff = (perturbed.to(ct) - base.to(ct).unsqueeze(0)) / fd_eps
    return diff.reshape(diff.shape[0], diff.shape[1], -1).pow(2).sum(-1).mean(0)


def _check_out(out: object, rows: int, name: str = "fn(x)") -> None:
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != rows:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{OP}: {name} must return one output per input row, shape "
            f"({rows}, ...) for the {rows} rows it was given; got {got}"
        )
