"""AdaGN, the U-Net's conditioning normalization (SPEC section 3, DiffAE-style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backends, _ext
from . import _selfcheck as _selfcheck_mod
from ._validate import check_nonempty, check_positive, check_tensor

OP = "adagn"  # the one name: registry, kernels, custom op, C++ schema, test, bench
FN = "adagn"  # the public function (error messages)
# Test tolerances of the fast backends against the float64 reference (added to
# 2 x the error of the reference run in the same input dtype).
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=1e-2)}


def adagn(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    zscale: torch.Tensor | None = None,
    *,
    groups: int,
    eps: float = 1e-5,
    backend: str = "auto",
) -> torch.Tensor:
    """y = SiLU((GroupNorm(x) * (1 + scale) + shift) * (1 + zscale)).

    x: (B, C, H, W) (any memory format; the output keeps channels_last); weight, bias: (C,)
    GroupNorm affine or None;
    scale, shift: (B, C) from the timestep embedding; zscale: (B, C) from the semantic code,
    or None. Statistics in float32; returns x's dtype.

    Equivalent PyTorch::

        h = F.group_norm(x.float(), groups, weight, bias, eps)
        h = h * (1 + scale[..., None, None]) + shift[..., None, None]
        F.silu(h * (1 + zscale[..., None, None]))
    """
    check_tensor(FN, "x", x, shape=("B", "C", None, None))
    b, c = x.shape[:2]
    check_nonempty(FN, "x", x)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(FN, name, t, shape=(c,), device=x.device)
    check_tensor(FN, "scale", scale, shape=(b, c), device=x.device)
    check_tensor(FN, "shift", shift, shape=(b, c), device=x.device)
    if zscale is not None:
        check_tensor(FN, "zscale", zscale, shape=(b, c), device=x.device)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups:
        raise ValueError(
            f"{FN}: argument 'groups' must be a positive divisor of C={c}, got {groups!r}"
        )
    if (c // groups) * x.shape[2] * x.shape[3] < 2:
        raise ValueError(
            f"{FN}: each group must hold more than one value (C/groups * H * W = "
            f"{(c // groups) * x.shape[2] * x.shape[3]}): the variance is undefined"
        )
    eps = check_positive(FN, "eps", eps)
    impl = _backends.resolve(OP, backend, x.device, x.dtype, size=x.numel())
    if impl.name == "reference":
        return impl.fn(x, weight, bias, scale, shift, zscale, groups, eps)
    return torch.ops.arcdae_fast.adagn(
        x, weight, bias, scale, shift, zscale, groups, eps, impl.name
    )[0]


def adagn_reference(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    zscale: torch.Tensor | None,
    groups: int,
    eps: float,
) -> torch.Tensor:
    """Eager ground truth."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(ct)

    h = F.group_norm(x.to(ct), groups, cast(weight), cast(bias), eps)
    h = h * (1 + cast(scale)[..., None, None]) + cast(shift)[..., None, None]
    if zscale is not None:
        h = h * (1 + cast(zscale)[..., None, None])
    return F.silu(h).to(x.dtype)


_backends.register_reference(OP, adagn_reference)


def _selfcheck(backend: str, device: torch.device) -> str | None:
    def run(be, dev, dt):
        outs = []
        for channels_last in (False, True):
            (x,) = _selfcheck_mod.leaves(dev, dt, _selfcheck_mod.randn(2, 8, 5, 6, seed=0))
            if channels_last:
                x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
            ps = _selfcheck_mod.leaves(
                dev,
                torch.float32,
                *(
                    _selfcheck_mod.randn(*s, seed=i)
                    for i, s in enumerate(((8,), (8,), (2, 8), (2, 8), (2, 8)), 1)
                ),
            )
            y = adagn(x, *ps, groups=4, backend=be)
            outs += [y, *torch.autograd.grad(y, [x, *ps], torch.ones_like(y))]
        return outs

    return _selfcheck_mod.compare(run, backend, device)


# measured crossover on a 2-core CPU: ~1e5 elements (fwd+bwd)
_ext.register(OP, cuda_priority=_ext.CUDA_PRIORITY, selfcheck=_selfcheck)

# -- fast backends (the C++/CUDA extension): one fused op node for torch.compile. The kernels
#    take x contiguous in NCHW or channels_last and the small (C,) / (B, C) tensors in
#    float32; gradients are cast back to each input's dtype here.


def _dense(x: torch.Tensor) -> torch.Tensor:
    """x itself if contiguous or channels_last, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float().contiguous()


@torch.library.custom_op("arcdae_fast::adagn", mutates_args=())
def _adagn_op(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    zscale: torch.Tensor | None,
    groups: int,
    eps: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y like x, mean (B, G), rstd (B, G), sig) with float32 statistics; sig = sigmoid of the
    pre-activation, saved for backward for float32 on CPU (else empty: recomputed)."""
    return _backends.primitives(OP, backend).forward(
        _dense(x), _f32(weight), _f32(bias), _f32(scale), _f32(shift), _f32(zscale), groups, eps
    )


@_adagn_op.register_fake
def _(x, weight, bias, scale, shift, zscale, groups, eps, backend):
    stats = x.new_empty(x.shape[0], groups, dtype=torch.float32)
    y = torch.empty_like(_dense(x))
    saved = x.device.type == "cpu" and x.dtype == torch.float32
    sig = torch.empty_like(y) if saved else x.new_empty(0)
    return y, stats, torch.empty_like(stats), sig


@torch.library.custom_op("arcdae_fast::adagn_backward", mutates_args=())
def _adagn_backward_op(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: torch.Tensor,
    shift: torch.Tensor,
    zscale: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    sig: torch.Tensor,
    groups: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias, dscale, dshift, dzscale); empty where the input is None."""
    xd = _dense(x)
    dx, dw, db, ds, dsh, dz = _backends.primitives(OP, backend).backward(
        dy.to(x.dtype),
        xd,
        _f32(weight),
        _f32(bias),
        _f32(scale),
        _f32(shift),
        _f32(zscale),
        mean,
        rstd,
        sig,
        groups,
    )

    def cast(g, like):
        return g if like is None else g.to(like.dtype)

    return (
        dx,
        cast(dw, weight),
        cast(db, bias),
        ds.to(scale.dtype),
        dsh.to(shift.dtype),
        cast(dz, zscale),
    )


@_adagn_backward_op.register_fake
def _(dy, x, weight, bias, scale, shift, zscale, mean, rstd, sig, groups, backend):
    empty = x.new_empty(0, dtype=torch.float32)

    def like(t):
        return empty if t is None else torch.empty_like(t)

    return (
        torch.empty_like(_dense(x)),
        like(weight),
        like(bias),
        torch.empty_like(scale),
        torch.empty_like(shift),
        like(zscale),
    )


def _setup_context(ctx, inputs, output):
    x, weight, bias, scale, shift, zscale, groups, eps, backend = inputs
    ctx.save_for_backward(x, weight, bias, scale, shift, zscale, *output[1:])
    ctx.set_materialize_grads(False)  # unused outputs' gradients stay None, not zeros
    ctx.args = (groups, backend)


def _backward(ctx, dy, _dmean, _drstd, _dsig):
    if dy is None:
        return (None,) * 9
    x, weight, bias, scale, shift, zscale, mean, rstd, sig = ctx.saved_tensors
    grads = _adagn_backward_op(
        dy, x, weight, bias, scale, shift, zscale, mean, rstd, sig, *ctx.args
    )
    present = (True, weight is not None, bias is not None, True, True, zscale is not None)
    return (*(g if p else None for g, p in zip(grads, present)), None, None, None)


_adagn_op.register_autograd(_backward, setup_context=_setup_context)
