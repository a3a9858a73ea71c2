import math

import pytest
import torch
import torch.nn.functional as F

from arcdae_fast.ops import sample_augment_params, timestep_augment
from arcdae_fast.ops.augment import YIQ

IDENTITY = [0.5, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]


def params(batch=2, **kw):
    names = ["cx", "cy", "w", "h", "flip", "b", "c", "q", "hue"]
    row = [kw.get(n, v) for n, v in zip(names, IDENTITY)]
    return torch.tensor([row] * batch, dtype=torch.float32)


def images(b=2, h=6, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def aug(x, p):
    b = x.shape[0]
    x_t, view = timestep_augment(x, p, torch.ones(b), torch.zeros(b), torch.zeros_like(x))
    torch.testing.assert_close(x_t, view)
    return view


def test_strength_zero_is_identity():
    x = images()
    p = sample_augment_params(torch.zeros(2))
    assert p.tolist() == [IDENTITY, IDENTITY]
    torch.testing.assert_close(aug(x, p), x, atol=1e-6, rtol=0)


def test_flip_only_equals_torch_flip():
    x = images()
    torch.testing.assert_close(aug(x, params(flip=1.0)), torch.flip(x, [-1]), atol=1e-6, rtol=0)


def test_brightness_only_is_clamped_product():
    x = images()
    want = ((x + 1) / 2 * 1.3).clamp(0, 1) * 2 - 1
    torch.testing.assert_close(aug(x, params(b=1.3)), want, atol=1e-6, rtol=0)


def test_crop_matches_grid_sample():
    x = images(h=8, w=10)
    p = params(cx=0.4, cy=0.55, w=0.5, h=0.7, flip=1.0)
    j = (torch.arange(10) + 0.5) / 10
    i = (torch.arange(8) + 0.5) / 8
    sx = 0.4 + ((1 - j) - 0.5) * 0.5
    sy = 0.55 + (i - 0.5) * 0.7
    grid = torch.stack(torch.broadcast_tensors(2 * sx[None, :] - 1, 2 * sy[:, None] - 1), -1)
    want = F.grid_sample(
        x, grid.expand(2, 8, 10, 2), mode="bilinear", padding_mode="border", align_corners=False
    )
    torch.testing.assert_close(aug(x, p), want, atol=1e-5, rtol=0)


def test_crop_beyond_border_clamps():
    x = images(h=4, w=4)
    out = aug(x, params(cx=0.95, w=1.0))  # right part samples past the border
    torch.testing.assert_close(out[..., -1], x[..., -1], atol=1e-6, rtol=0)


def gray(y):
    return 0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2]


def test_contrast_around_mean_gray_after_brightness():
    x = images()
    y = (x + 1) / 2 * 0.9
    m = gray(y).mean((1, 2)).view(-1, 1, 1, 1)
    want = ((y - m) * 1.2 + m).clamp(0, 1) * 2 - 1
    torch.testing.assert_close(aug(x, params(b=0.9, c=1.2)), want, atol=1e-6, rtol=0)


def test_saturation_zero_gives_gray():
    x = images()
    out = (aug(x, params(q=0.0)) + 1) / 2
    g = gray((x + 1) / 2)
    for ch in range(3):
        torch.testing.assert_close(out[:, ch], g, atol=1e-6, rtol=0)


def test_hue_rotation_in_yiq():
    x = images() * 0.3  # keep colours well inside the cube so nothing clamps
    t = torch.tensor(YIQ, dtype=torch.float64)
    for h in (0.1, 0.5, 1.0):
        theta = 2 * math.pi * h
        rot = torch.tensor(
            [
                [1, 0, 0],
                [0, math.cos(theta), -math.sin(theta)],
                [0, math.sin(theta), math.cos(theta)],
            ],
            dtype=torch.float64,
        )
        m = torch.linalg.inv(t) @ rot @ t
        y = (x.double() + 1) / 2
        want = torch.einsum("ij,bjhw->bihw", m, y).clamp(0, 1) * 2 - 1
        got = aug(x, params(hue=h))
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(gray(got), gray(x), atol=1e-5, rtol=0)  # luma kept


def test_noising_and_range():
    x = images(b=3) * 1.5  # some inputs outside [-1, 1]
    g = torch.Generator().manual_seed(3)
    p = sample_augment_params(torch.tensor([0.2, 0.7, 1.0]), g)
    alpha, sigma = torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0.43, 0.86, 0.99])
    noise = torch.randn(x.shape, generator=g)
    x_t, view = timestep_augment(x, p, alpha, sigma, noise)
    assert view.shape == x.shape and view.min() >= -1 and view.max() <= 1
    torch.testing.assert_close(
        x_t, alpha.view(-1, 1, 1, 1) * view + sigma.view(-1, 1, 1, 1) * noise
    )


def test_float64_and_bf16():
    x = images()
    p = sample_augment_params(torch.full((2,), 0.8), torch.Generator().manual_seed(0))
    args = (p, torch.rand(2), torch.rand(2), torch.randn_like(x))
    ref = timestep_augment(x.double(), *args)[1]
    assert ref.dtype == torch.float64
    out = timestep_augment(x.bfloat16(), *args)[1]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=0)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_float32_inside_autocast(backend):
    """Inside a bf16 autocast region (the training step) the augmentation still computes in
    float32, as outside it and as the fast backends: autocast turned the reference's hue
    einsum into a bf16 matmul (view error 7e-3)."""
    x = images(b=4, h=16, w=16)
    p = sample_augment_params(torch.full((4,), 0.8), torch.Generator().manual_seed(1))
    args = (p, torch.rand(4), torch.rand(4), torch.randn_like(x))
    want = timestep_augment(x, *args, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = timestep_augment(x, *args, backend=backend)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


def test_sampler_ranges_and_determinism():
    s = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    p = sample_augment_params(s, torch.Generator().manual_seed(1))
    q = sample_augment_params(s, torch.Generator().manual_seed(1))
    assert p.dtype == torch.float32 and p.shape == (4000, 9) and torch.equal(p, q)
    cx, cy, w, h, flip, b, c, sat, hue = p.unbind(1)
    assert (w <= 1).all() and (h <= 1).all()
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()
    unclipped = (w < 1) & (h < 1)
    area = (w * h)[unclipped]
    assert (area >= 1 - 0.65 * s[unclipped] - 1e-5).all()
    for v in (b, c, sat):
        assert ((v - 1).abs() <= 0.4 * s + 1e-6).all()
    assert (hue.abs() <= 0.1 * s + 1e-6).all()
    assert (flip[s < 0.05] == 0).sum() > 0.95 * (s < 0.05).sum()
    high = s > 0.9
    assert 0.38 < flip[high].mean() < 0.58  # P(flip) = s / 2


@pytest.mark.parametrize("fn", ["sample", "apply"])
def test_bad_inputs(fn):
    if fn == "sample":
        with pytest.raises(ValueError, match=r"'strength' must lie in \[0, 1\]"):
            sample_augment_params(torch.tensor([0.5, 1.5]))
        with pytest.raises(ValueError, match=r"'strength' must have shape \(B\)"):
            sample_augment_params(torch.zeros(2, 1))
        return
    x, p = images(), params()
    ab = torch.ones(2)
    with pytest.raises(ValueError, match=r"'x' must have shape \(B, 3, H, W\)"):
        timestep_augment(torch.zeros(2, 4, 5, 5), p, ab, ab, torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"'params' must have shape \(2, 9\)"):
        timestep_augment(x, p[:, :8], ab, ab, x)
    with pytest.raises(ValueError, match=r"'sigma' must have shape \(2\)"):
        timestep_augment(x, p, ab, torch.ones(3), x)
    with pytest.raises(ValueError, match="'noise' must have shape"):
        timestep_augment(x, p, ab, ab, x[..., :-1])
    with pytest.raises(TypeError, match="'x' must have dtype"):
        timestep_augment(x.to(torch.uint8), p, ab, ab, x)
    with pytest.raises(ValueError, match="empty batch"):
        timestep_augment(x[:0], p[:0], ab[:0], ab[:0], x[:0])


# ---- fast backends (Triton: CUDA, or the interpreter on CPU) -------------------------------

import hypothesis.strategies as st  # noqa: E402
from helpers import DEVICE, LOW, assert_matches, fast_backends  # noqa: E402
from hypothesis import given, settings  # noqa: E402

from arcdae_fast.ops import augment as augment_mod  # noqa: E402
from arcdae_fast.ops import timestep_augment_with_noise  # noqa: E402

FAST = fast_backends("augment")


def fast_case(b, h, w, backend, dtype, seed=0, channels_last=False, strength=None):
    g = torch.Generator().manual_seed(seed)
    x64 = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64) * 2.2 - 1.1
    s = torch.rand(b, generator=g) if strength is None else torch.full((b,), strength)
    p = sample_augment_params(s, g)
    alpha, sigma = torch.rand(b, generator=g), torch.rand(b, generator=g)
    n64 = torch.randn(b, 3, h, w, generator=g, dtype=torch.float64)

    def go(dev, dt, be):
        x, n = x64.to(dev, dt), n64.to(dev, dt)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        return timestep_augment(x, p.to(dev), alpha.to(dev), sigma.to(dev), n, backend=be)

    truth = go("cpu", torch.float64, "reference")
    ref = go("cpu", dtype, "reference")
    fast = go(DEVICE, dtype, backend)
    for name, f, r, t in zip(("x_t", "view"), fast, ref, truth):
        assert f.dtype == dtype and f.shape == t.shape
        assert_matches(f, r, t, augment_mod.TOL[dtype], f"{backend}/{dtype}/{name}")
    return fast


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 8, 10), (2, 17, 13), (2, 32, 32)])
def test_fast_backend_matches_float64_reference(backend, dtype, shape):
    fast_case(*shape, backend, dtype)


@pytest.mark.parametrize("backend", FAST)
def test_fast_backend_channels_last_and_identity(backend):
    x_t, view = fast_case(2, 9, 11, backend, torch.float32, channels_last=True)
    assert view.is_contiguous(memory_format=torch.channels_last)
    x = images(b=2, h=7, w=5).to(DEVICE)
    p = sample_augment_params(torch.zeros(2)).to(DEVICE)
    one, zero = torch.ones(2, device=DEVICE), torch.zeros(2, device=DEVICE)
    _, view = timestep_augment(x, p, one, zero, torch.zeros_like(x), backend=backend)
    torch.testing.assert_close(view, x, atol=1e-6, rtol=0)  # strength 0 = identity


@pytest.mark.parametrize("backend", FAST)
@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 24), w=st.integers(1, 24), seed=st.integers(0, 10**6))
def test_fast_backend_fuzz(backend, b, h, w, seed):
    fast_case(b, h, w, backend, torch.float32, seed=seed)


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    x = torch.rand(2, 3, 5, 6, device=DEVICE) * 2 - 1
    p = sample_augment_params(torch.rand(2)).to(DEVICE)
    a, s = torch.rand(2, device=DEVICE), torch.rand(2, device=DEVICE)
    torch.library.opcheck(
        torch.ops.arcdae_fast.augment.default, (x, p, a, s, torch.randn_like(x), backend)
    )
    torch.library.opcheck(torch.ops.arcdae_fast.augment_noise.default, (x, p, a, s, 3, 0, backend))


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_in_kernel_noise(backend):
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).to(DEVICE)
    p = sample_augment_params(torch.rand(4)).to(DEVICE)
    a, s = torch.rand(4, device=DEVICE), torch.rand(4, device=DEVICE)
    x_t, view, noise = timestep_augment_with_noise(x, p, a, s, seed=11, backend=backend)
    torch.testing.assert_close(x_t, a.view(-1, 1, 1, 1) * view + s.view(-1, 1, 1, 1) * noise)
    ref_view = timestep_augment(x, p, a, s, noise, backend="reference")[1]
    torch.testing.assert_close(view, ref_view, atol=1e-5, rtol=0)
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    again = timestep_augment_with_noise(x, p, a, s, seed=11, backend=backend)[2]
    other = timestep_augment_with_noise(x, p, a, s, seed=11, offset=1, backend=backend)[2]
    assert torch.equal(noise, again) and not torch.equal(noise, other)


def test_not_differentiable_inputs_rejected():
    x = images().requires_grad_()
    p = params()
    with pytest.raises(ValueError, match="'x' requires grad, but the augmentation is not"):
        timestep_augment(x, p, torch.ones(2), torch.ones(2), torch.zeros(2, 3, 6, 9))
    with pytest.raises(ValueError, match="'seed' must be an int"):
        timestep_augment_with_noise(images(), p, torch.ones(2), torch.ones(2), seed=-1)


@pytest.mark.skipif("cpp" not in FAST, reason="the C++ extension is not built")
def test_cpp_noise_is_the_reference_noise():
    x = images(b=3, h=5, w=4)
    p = sample_augment_params(torch.rand(3))
    a, s = torch.rand(3), torch.rand(3)
    ref = timestep_augment_with_noise(x, p, a, s, seed=2**40 + 3, offset=9, backend="reference")
    cpp = timestep_augment_with_noise(x, p, a, s, seed=2**40 + 3, offset=9, backend="cpp")
    assert torch.equal(ref[2], cpp[2])
    torch.testing.assert_close(cpp[1], ref[1], atol=1e-5, rtol=0)
