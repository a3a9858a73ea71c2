"""TAPA augmentation + noising kernels (SPEC section 2), following the reference arithmetic.

Two passes over the image, as the contrast step needs each view's mean gray:
1. `_mean_gray_kernel`: one program per image, the mean over output pixels of the gray value
   of the bilinearly cropped / flipped [0, 1] image (gray is linear, so brightness is applied
   to the mean afterwards: mean gray after brightness = b * mean);
2. `_augment_kernel`: per (image, pixel block): crop/flip by bilinear sampling (border clamp),
   brightness, contrast, saturation, hue (YIQ rotation), clamp, x_t = alpha * view +
   sigma * noise. With DRAW_NOISE the noise is drawn in-kernel (Philox via tl.randn with
   seed and offset + element index) and written out.
"""

import torch
import triton
import triton.language as tl

from . import next_pow2

BLOCK = 256
# YIQ chroma rows T[1:], and columns 1, 2 of T^-1 (see arcdae_fast/ops/augment.py)
_T = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _yiq_constants() -> tuple[float, ...]:
    t = torch.tensor(_T, dtype=torch.float64)
    t_inv = torch.linalg.inv(t)
    return tuple(t[1:].flatten().tolist()) + tuple(t_inv[:, 1:].flatten().tolist())


YIQ_CONSTANTS = _yiq_constants()  # i0 i1 i2 q0 q1 q2 | inv: r_i r_q g_i g_q b_i b_q


@triton.jit
def _bilinear(p, o00, o10, o01, o11, fx, fy, mask):
    """One channel at [0, 1] scale; along H first, then W (the reference's order)."""
    a = (tl.load(p + o00, mask=mask, other=0.0).to(tl.float32) + 1.0) * 0.5
    b = (tl.load(p + o10, mask=mask, other=0.0).to(tl.float32) + 1.0) * 0.5
    c = (tl.load(p + o01, mask=mask, other=0.0).to(tl.float32) + 1.0) * 0.5
    d = (tl.load(p + o11, mask=mask, other=0.0).to(tl.float32) + 1.0) * 0.5
    left = a + (b - a) * fy
    right = c + (d - c) * fy
    return left + (right - left) * fx


@triton.jit
def _sample(X, P, b, offs, mask, H, W, sxb, sxc, sxh, sxw):
    """Bilinear crop/flip sample (border clamp) of the [0, 1] image at output pixels `offs`
    (flat h * W + w); returns the three channels in float32."""
    cx = tl.load(P + b * 9 + 0)
    cy = tl.load(P + b * 9 + 1)
    cw = tl.load(P + b * 9 + 2)
    ch = tl.load(P + b * 9 + 3)
    flip = tl.load(P + b * 9 + 4)
    i = offs // W
    j = offs - i * W
    u = (j.to(tl.float32) + 0.5) / W
    v = (i.to(tl.float32) + 0.5) / H
    u = tl.where(flip > 0.5, 1.0 - u, u)
    sx = (cx + (u - 0.5) * cw) * W - 0.5
    sy = (cy + (v - 0.5) * ch) * H - 0.5
    sx = tl.minimum(tl.maximum(sx, 0.0), (W - 1).to(tl.float32))
    sy = tl.minimum(tl.maximum(sy, 0.0), (H - 1).to(tl.float32))
    x0f = tl.floor(sx)
    y0f = tl.floor(sy)
    fx = sx - x0f
    fy = sy - y0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    x1 = tl.minimum(x0 + 1, W - 1)
    y1 = tl.minimum(y0 + 1, H - 1)
    base = X + b * sxb
    o00, o10 = y0 * sxh + x0 * sxw, y1 * sxh + x0 * sxw
    o01, o11 = y0 * sxh + x1 * sxw, y1 * sxh + x1 * sxw
    r = _bilinear(base, o00, o10, o01, o11, fx, fy, mask)
    g = _bilinear(base + sxc, o00, o10, o01, o11, fx, fy, mask)
    bl = _bilinear(base + 2 * sxc, o00, o10, o01, o11, fx, fy, mask)
    return r, g, bl


@triton.jit
def _write(
    val,
    c,
    b,
    i,
    j,
    offs,
    mask,
    H,
    W,
    alpha,
    sigma,
    NOISE,
    XT,
    VIEW,
    snb,
    snc,
    snh,
    snw,
    sob,
    soc,
    soh,
    sow,
    seed,
    offset,
    DRAW_NOISE: tl.constexpr,
):
    """Clamp, map to [-1, 1], noise and store one channel."""
    clamped = tl.minimum(tl.maximum(val, 0.0), 1.0)
    view = tl.where(val != val, val, clamped) * 2.0 - 1.0  # NaN kept, as torch.clamp does
    npos = NOISE + b * snb + c * snc + i * snh + j * snw
    if DRAW_NOISE:
        eps = tl.randn(seed, offset + (b * 3 + c) * H * W + offs)
        tl.store(npos, eps.to(NOISE.dtype.element_ty), mask=mask)
    else:
        eps = tl.load(npos, mask=mask, other=0.0).to(tl.float32)
    opos = b * sob + c * soc + i * soh + j * sow
    tl.store(VIEW + opos, view.to(VIEW.dtype.element_ty), mask=mask)
    tl.store(XT + opos, (alpha * view + sigma * eps).to(XT.dtype.element_ty), mask=mask)


@triton.jit
def _mean_gray_kernel(X, P, MEAN, H, W, sxb, sxc, sxh, sxw, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, H * W, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < H * W
        r, g, bl = _sample(X, P, b, offs, mask, H, W, sxb, sxc, sxh, sxw)
        acc += tl.where(mask, 0.299 * r + 0.587 * g + 0.114 * bl, 0.0)
    tl.store(MEAN + b, tl.sum(acc, axis=0) / (H * W))


@triton.jit
def _augment_kernel(
    X,
    P,
    MEAN,
    ALPHA,
    SIGMA,
    NOISE,
    XT,
    VIEW,
    H,
    W,
    sxb,
    sxc,
    sxh,
    sxw,
    snb,
    snc,
    snh,
    snw,
    sob,
    soc,
    soh,
    sow,
    seed,
    offset,
    ti0,
    ti1,
    ti2,
    tq0,
    tq1,
    tq2,
    vri,
    vrq,
    vgi,
    vgq,
    vbi,
    vbq,
    BLOCK: tl.constexpr,
    DRAW_NOISE: tl.constexpr,
):
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    r, g, bl = _sample(X, P, b, offs, mask, H, W, sxb, sxc, sxh, sxw)
    bright = tl.load(P + b * 9 + 5)
    contrast = tl.load(P + b * 9 + 6)
    sat = tl.load(P + b * 9 + 7)
    hue = tl.load(P + b * 9 + 8)
    m = tl.load(MEAN + b) * bright
    r, g, bl = r * bright, g * bright, bl * bright
    r, g, bl = (r - m) * contrast + m, (g - m) * contrast + m, (bl - m) * contrast + m
    gray = 0.299 * r + 0.587 * g + 0.114 * bl
    r, g, bl = (r - gray) * sat + gray, (g - gray) * sat + gray, (bl - gray) * sat + gray
    theta = 6.283185307179586 * hue
    cs = tl.cos(theta) - 1.0
    sn = tl.sin(theta)
    ci = ti0 * r + ti1 * g + ti2 * bl  # chroma I, Q
    cq = tq0 * r + tq1 * g + tq2 * bl
    di = cs * ci - sn * cq  # (R(theta) - I) applied to (I, Q)
    dq = sn * ci + cs * cq
    r = r + vri * di + vrq * dq
    g = g + vgi * di + vgq * dq
    bl = bl + vbi * di + vbq * dq
    alpha = tl.load(ALPHA + b)
    sigma = tl.load(SIGMA + b)
    i = offs // W
    j = offs - i * W
    args = (
        b,
        i,
        j,
        offs,
        mask,
        H,
        W,
        alpha,
        sigma,
        NOISE,
        XT,
        VIEW,
        snb,
        snc,
        snh,
        snw,
        sob,
        soc,
        soh,
        sow,
        seed,
        offset,
        DRAW_NOISE,
    )
    _write(r, 0, *args)
    _write(g, 1, *args)
    _write(bl, 2, *args)


def config(h: int, w: int) -> dict:
    return dict(BLOCK=min(BLOCK, next_pow2(h * w)))


def augment(
    x: torch.Tensor,
    params: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor | None,
    seed: int = 0,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, view, noise) like x. `noise=None` draws it in-kernel from (seed, offset)."""
    b, _, h, w = x.shape
    p = params.float().contiguous()
    a, s = alpha.float().contiguous(), sigma.float().contiguous()
    x_t = torch.empty_like(x)
    view = torch.empty_like(x)
    draw = noise is None
    if draw:
        noise = torch.empty_like(x)
    mean = torch.empty(b, device=x.device, dtype=torch.float32)
    block = config(h, w)["BLOCK"]
    _mean_gray_kernel[(b,)](x, p, mean, h, w, *x.stride(), BLOCK=block)
    _augment_kernel[(b, triton.cdiv(h * w, block))](
        x,
        p,
        mean,
        a,
        s,
        noise,
        x_t,
        view,
        h,
        w,
        *x.stride(),
        *noise.stride(),
        *x_t.stride(),
        seed,
        offset,
        *YIQ_CONSTANTS,
        BLOCK=block,
        DRAW_NOISE=draw,
    )
    return x_t, view, noise
