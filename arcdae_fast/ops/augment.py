"""TAPA augmentation + noising (SPEC section 2): parameter sampler, public apply op, reference.

Parameter layout (float32, (B, 9)): (cx, cy, w, h, flip, brightness, contrast, saturation,
hue_shift). Crop values are in units of the image side (w of the width, h of the height).
"""

from __future__ import annotations

import math

import torch

from ..images import as_rgb
from . import _backends, _ext, _triton
from . import _selfcheck as _selfcheck_mod
from ._validate import check_nonempty, check_tensor

OP = "augment"  # the one name: registry, kernels, custom op, C++ schema, test, bench
FN = "timestep_augment"  # the public function (error messages)
N_PARAMS = 9
GRAY = (0.299, 0.587, 0.114)
# RGB -> YIQ (rows Y, I, Q); its first row is GRAY, so a hue rotation keeps the gray value.
YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
MIN_AREA, MAX_LOG_ASPECT, COLOR_RANGE, HUE_RANGE = 0.35, math.log(4 / 3), 0.4, 0.1
# Test tolerances of the fast backends against the float64 reference (added to
# 2 x the error of the reference run in the same input dtype).
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=1e-2, rtol=0.0)}


def sample_augment_params(
    strength: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw per-sample augmentation parameters whose ranges grow with strength s in [0, 1].

    strength: (B,) float. Returns float32 (B, 9) on strength's device, following SPEC
    section 2: a ~ U(1 - 0.65 s, 1), r = exp(U(-s ln 4/3, s ln 4/3)), w = min(sqrt(a r), 1),
    h = min(sqrt(a / r), 1), centre uniform where the crop fits, flip ~ Bernoulli(s / 2),
    brightness/contrast/saturation ~ U(1 - 0.4 s, 1 + 0.4 s), hue ~ U(-0.1 s, 0.1 s).
    Strength 0 gives exactly (0.5, 0.5, 1, 1, 0, 1, 1, 1, 0): the identity.
    Random numbers come from `generator` (on its device) when given.
    """
    op = "sample_augment_params"
    check_tensor(op, "strength", strength, shape=("B",))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{op}: argument 'generator' must be a torch.Generator or None, got "
            f"{type(generator).__name__}"
        )
    s = strength.to(torch.float32)
    # a value check needs a host sync; under torch.compile it would break the graph
    checkable = not torch.compiler.is_compiling() and not s.is_meta
    if checkable and not bool(((s >= 0) & (s <= 1)).all()):
        bad = s[~((s >= 0) & (s <= 1))][:4].tolist()
        raise ValueError(f"{op}: argument 'strength' must lie in [0, 1], got values {bad}")
    dev = generator.device if generator is not None else s.device
    u = torch.rand((s.shape[0], N_PARAMS), generator=generator, device=dev).to(s.device)
    a = 1 - s * (1 - MIN_AREA) * u[:, 0]
    r = torch.exp(s * MAX_LOG_ASPECT * (2 * u[:, 1] - 1))
    w = torch.sqrt(a * r).clamp(max=1.0)
    h = torch.sqrt(a / r).clamp(max=1.0)
    cx = w / 2 + (1 - w) * u[:, 2]
    cy = h / 2 + (1 - h) * u[:, 3]
    flip = (u[:, 4] < 0.5 * s).to(torch.float32)
    b, c, q = (1 + COLOR_RANGE * s * (2 * u[:, k] - 1) for k in (5, 6, 7))
    hue = HUE_RANGE * s * (2 * u[:, 8] - 1)
    return torch.stack([cx, cy, w, h, flip, b, c, q, hue], dim=1)


def timestep_augment(
    x: torch.Tensor,
    params: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply augmentation `params` to images x in [-1, 1], then noise them.

    x, noise: (B, 3, H, W), or grey (B, 1, H, W) (augmented as the replicated RGB image);
    params: (B, 9) from `sample_augment_params`; alpha, sigma: (B,).
    Returns (x_t, view), both like x: view = aug(x) in [-1, 1] and
    x_t = alpha * view + sigma * noise. Steps (SPEC section 2), in [0, 1] pixel space:
    crop + flip by bilinear resampling to the same size (border clamp), brightness (x * b),
    contrast around the view's mean gray, saturation (blend with the pixel's gray), hue
    (rotation by 2 pi h of the YIQ chroma plane), clamp to [0, 1]. No clamp between steps.
    Computed in float32 for bf16/fp16 inputs. Not differentiable (a data transform): inputs
    that require grad are rejected. `params` are validated in eager calls (`check_params`:
    finite, crop sizes > 0, flip 0/1, colour factors >= 0, |hue| <= 1), the same for every
    backend; NaN in x propagates identically in every backend (the clamp keeps it).
    """
    if x.dim() == 4 and x.shape[1] == 1:  # grey: the RGB transform of the replicated image
        x_t, view = timestep_augment(
            as_rgb(x).contiguous(),
            params,
            alpha,
            sigma,
            as_rgb(noise).contiguous(),
            backend=backend,
        )  # saturation and hue leave grey grey: the channels are equal, their mean is the image
        return x_t.mean(1, keepdim=True), view.mean(1, keepdim=True)
    _check_inputs(FN, x, params, alpha, sigma, noise=noise)
    impl = _backends.resolve(OP, backend, x.device, x.dtype, size=x.numel())
    if impl.name == "reference":
        return impl.fn(x, params, alpha, sigma, noise)
    return tuple(torch.ops.arcdae_fast.augment(x, params, alpha, sigma, noise, impl.name))


def timestep_augment_with_noise(
    x: torch.Tensor,
    params: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    *,
    seed: int,
    offset: int = 0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`timestep_augment` that draws the noise itself and returns it: (x_t, view, noise).

    The Triton backend draws N(0, 1) in-kernel with Philox from (seed, offset + element
    index), saving a separate randn pass and its memory traffic; the reference draws it with
    a torch.Generator seeded from (seed, offset). The same (seed, offset) gives the same noise
    on a given backend; the bits differ between backends (the distribution does not).
    """
    op = "timestep_augment_with_noise"
    _check_inputs(op, x, params, alpha, sigma)
    for name, v in (("seed", seed), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**62:
            raise ValueError(f"{op}: argument '{name}' must be an int in [0, 2**62), got {v!r}")
    if x.is_meta:  # shapes only (no generator lives on meta)
        return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    impl = _backends.resolve(OP, backend, x.device, x.dtype, size=x.numel())
    if impl.name == "reference":
        g = torch.Generator(device=x.device).manual_seed(seed * 1_000_003 + offset)
        noise = torch.randn(x.shape, generator=g, device=x.device, dtype=torch.float32)
        return (*impl.fn(x, params, alpha, sigma, noise.to(x.dtype)), noise.to(x.dtype))
    return tuple(
        torch.ops.arcdae_fast.augment_noise(x, params, alpha, sigma, seed, offset, impl.name)
    )


def _check_inputs(
    op: str,
    x: torch.Tensor,
    params: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor | None = None,
) -> None:
    check_tensor(op, "x", x, shape=("B", 3, "H", "W"))
    b = x.shape[0]
    check_tensor(op, "params", params, shape=(b, N_PARAMS), device=x.device)
    check_tensor(op, "alpha", alpha, shape=(b,), device=x.device)
    check_tensor(op, "sigma", sigma, shape=(b,), device=x.device)
    named = {"x": x, "params": params, "alpha": alpha, "sigma": sigma}
    if noise is not None or op == FN:
        check_tensor(op, "noise", noise, shape=tuple(x.shape), device=x.device)
        named["noise"] = noise
    check_nonempty(op, "x", x)
    check_params(op, params)
    for name, t in named.items():
        if t.requires_grad:
            raise ValueError(
                f"{op}: argument '{name}' requires grad, but the augmentation is "
                "not differentiable (a data transform); pass it detached"
            )


# the valid range of each parameter (SPEC section 2's layout): every backend gets only these
PARAM_RANGES = (  # (name, low, high, as said in an error)
    ("cx", -math.inf, math.inf, "finite"),
    ("cy", -math.inf, math.inf, "finite"),
    ("w", 1e-6, math.inf, "positive and finite"),
    ("h", 1e-6, math.inf, "positive and finite"),
    ("flip", 0.0, 1.0, "0 or 1"),
    ("brightness", 0.0, math.inf, ">= 0 and finite"),
    ("contrast", 0.0, math.inf, ">= 0 and finite"),
    ("saturation", 0.0, math.inf, ">= 0 and finite"),
    ("hue", -1.0, 1.0, "in [-1, 1] (turns)"),
)


def check_params(op: str, params: torch.Tensor) -> None:
    """Every parameter finite and in its range (crop sizes > 0, flip in {0, 1}, brightness,
    contrast and saturation >= 0, |hue| <= 1 turn): outside it the backends would compute
    different things (a NaN crop indexes out of bounds, a hue of 1e4 turns loses float32
    precision). A value check needs a host sync, so it runs in eager calls, not under
    torch.compile (where the params come from sample_augment_params) nor on meta tensors."""
    if torch.compiler.is_compiling() or params.is_meta:
        return
    p = params.detach().float()
    lo = torch.tensor([r[1] for r in PARAM_RANGES], device=p.device)
    hi = torch.tensor([r[2] for r in PARAM_RANGES], device=p.device)
    bad = ~(torch.isfinite(p) & (p >= lo) & (p <= hi))
    bad[:, 4] |= (p[:, 4] != 0) & (p[:, 4] != 1)
    if bool(bad.any()):
        b, k = (int(v) for v in bad.nonzero()[0])
        name, _, _, rule = PARAM_RANGES[k]
        raise ValueError(
            f"{op}: argument 'params' has {name}={p[b, k].item()!r} at row {b} (column {k}); "
            f"it must be {rule}"
        )


def hue_matrices(hue: torch.Tensor) -> torch.Tensor:
    """Per-sample 3x3 RGB matrices M = I + Tinv[:, 1:] (R(2 pi h) - I) T[1:], (B, 3, 3).

    Written as identity plus a correction so that h = 0 gives exactly the identity."""
    t = torch.tensor(YIQ, dtype=torch.float64)
    t_inv = torch.linalg.inv(t)
    theta = 2 * math.pi * hue.to(torch.float64)
    cos, sin = torch.cos(theta) - 1, torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    t_inv, t = t_inv.to(hue.device), t.to(hue.device)
    corr = t_inv[:, 1:] @ rot @ t[1:, :]
    return (torch.eye(3, dtype=torch.float64, device=hue.device) + corr).to(hue.dtype)


def _bilinear_axis(img: torch.Tensor, src: torch.Tensor, dim: int) -> torch.Tensor:
    """Resample `img` along `dim` at per-sample pixel coordinates src (B, L), border clamp."""
    size = img.shape[dim]
    pos = src.clamp(0, size - 1)
    lo = pos.floor()
    frac = pos - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=size - 1)
    shape = [img.shape[0], 1, 1, 1]
    shape[dim] = src.shape[1]
    out_shape = list(img.shape)
    out_shape[dim] = src.shape[1]
    a = torch.gather(img, dim, lo.view(shape).expand(out_shape))
    b = torch.gather(img, dim, hi.view(shape).expand(out_shape))
    f = frac.view(shape)
    return a + (b - a) * f


@_backends.outside_autocast
def timestep_augment_reference(
    x: torch.Tensor,
    params: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager ground truth, step by step as SPEC section 2 states; in float32 (float64 for
    float64 inputs), also inside an autocast region, as the fast backends compute it."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    B, _, H, W = x.shape
    p = params.to(ct)
    cx, cy, w, h, flip, bright, contrast, sat, hue = p.unbind(1)
    img = (x.to(ct) + 1) * 0.5
    # crop + flip: output pixel centre u = (j + 0.5) / W -> source cx + (u - 0.5) w (u mirrored
    # first when flipping), in pixel units u * W - 0.5 (align_corners=False convention).
    u = (torch.arange(W, device=x.device, dtype=ct) + 0.5) / W
    v = (torch.arange(H, device=x.device, dtype=ct) + 0.5) / H
    u = torch.where(flip[:, None] > 0.5, 1 - u, u)
    src_x = (cx[:, None] + (u - 0.5) * w[:, None]) * W - 0.5
    src_y = (cy[:, None] + (v[None, :] - 0.5) * h[:, None]) * H - 0.5
    img = _bilinear_axis(_bilinear_axis(img, src_y, 2), src_x, 3)
    gray_w = torch.tensor(GRAY, dtype=ct, device=x.device).view(1, 3, 1, 1)
    img = img * bright.view(B, 1, 1, 1)
    mean_gray = (img * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    img = (img - mean_gray) * contrast.view(B, 1, 1, 1) + mean_gray
    gray = (img * gray_w).sum(1, keepdim=True)
    img = (img - gray) * sat.view(B, 1, 1, 1) + gray
    img = torch.einsum("bij,bjhw->bihw", hue_matrices(hue), img)
    view = img.clamp(0, 1) * 2 - 1
    x_t = alpha.to(ct).view(B, 1, 1, 1) * view + sigma.to(ct).view(B, 1, 1, 1) * noise.to(ct)
    return x_t.to(x.dtype), view.to(x.dtype)


_backends.register_reference(OP, timestep_augment_reference)


def _selfcheck(backend: str, device: torch.device) -> str | None:
    def run(be, dev, dt):
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(2, 3, 17, 13, generator=g) * 2 - 1).to(dev, dt)
        p = sample_augment_params(torch.tensor([0.4, 1.0]), g).to(dev)
        a, s = torch.rand(2, generator=g).to(dev), torch.rand(2, generator=g).to(dev)
        noise = torch.randn(2, 3, 17, 13, generator=g).to(dev, dt)
        outs = list(timestep_augment(x, p, a, s, noise, backend=be))
        if be != "reference":  # in-kernel noise: consistent with its own view and noise
            x_t, view, eps = timestep_augment_with_noise(x, p, a, s, seed=3, backend=be)
            outs.append(x_t - (a.view(-1, 1, 1, 1) * view + s.view(-1, 1, 1, 1) * eps))
        else:
            outs.append(torch.zeros(()))
        return outs

    return _selfcheck_mod.compare(run, backend, device)


_triton.register(OP, selfcheck=_selfcheck)
_ext.register(OP, cuda_priority=_ext.CUDA_PRIORITY_BEHIND_TRITON, selfcheck=_selfcheck)

# -- fast backends supply augment(x, params, alpha, sigma, noise | None, seed, offset)
#    -> (x_t, view, noise) (see kernels/augment.py).


@torch.library.custom_op("arcdae_fast::augment", mutates_args=())
def _augment_op(
    x: torch.Tensor,
    params: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    x_t, view, _ = _backends.primitives(OP, backend).augment(x, params, alpha, sigma, noise)
    return x_t, view


@_augment_op.register_fake
def _(x, params, alpha, sigma, noise, backend):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("arcdae_fast::augment_noise", mutates_args=())
def _augment_noise_op(
    x: torch.Tensor,
    params: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    seed: int,
    offset: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backends.primitives(OP, backend).augment(x, params, alpha, sigma, None, seed, offset)


@_augment_noise_op.register_fake
def _(x, params, alpha, sigma, seed, offset, backend):
    return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)


def _not_differentiable(ctx, *grads):
    raise RuntimeError(
        "timestep_augment is not differentiable (a data transform); detach its inputs"
    )


for _op in (_augment_op, _augment_noise_op):
    _op.register_autograd(_not_differentiable, setup_context=lambda ctx, inputs, output: None)
