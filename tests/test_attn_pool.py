import math

import pytest
import torch
import torch.nn.functional as F

from arcdae_fast.nn import AttentionPool, PartHead
from arcdae_fast.ops import attention_pool


def sdpa_form(x, query, key_weight, scale=None):
    """The pool written with explicit keys and scaled_dot_product_attention."""
    b = x.shape[0]
    keys = x @ key_weight.T
    q = query.expand(b, *query.shape)
    return F.scaled_dot_product_attention(q, keys, x, scale=scale)


@pytest.mark.parametrize("shape", [(2, 7, 5, 3, 4), (1, 1, 3, 1, 2), (3, 16, 8, 8, 6)])
def test_matches_sdpa(shape):
    b, n, c, k, dk = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    q = torch.randn(k, dk, generator=g, dtype=torch.float64)
    w = torch.randn(dk, c, generator=g, dtype=torch.float64)
    torch.testing.assert_close(attention_pool(x, q, w), sdpa_form(x, q, w))
    torch.testing.assert_close(attention_pool(x, q, w, scale=0.3), sdpa_form(x, q, w, 0.3))


def test_gradients_match_sdpa():
    g = torch.Generator().manual_seed(2)
    args = [
        torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
        for s in ((2, 5, 4), (3, 2), (2, 4))
    ]
    assert torch.autograd.gradcheck(lambda *a: attention_pool(*a), args)
    go = torch.randn(2, 3, 4, dtype=torch.float64)
    ours = torch.autograd.grad(attention_pool(*args), args, go)
    theirs = torch.autograd.grad(sdpa_form(*args), args, go)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_dtypes_and_layouts():
    x = torch.randn(2, 9, 6)
    q, w = torch.randn(3, 4), torch.randn(4, 6)
    out = attention_pool(x.bfloat16(), q, w)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 6)
    torch.testing.assert_close(
        out.float(), sdpa_form(x.bfloat16().float(), q, w), atol=2e-2, rtol=2e-2
    )
    xt = torch.randn(2, 6, 9).transpose(1, 2)  # non-contiguous tokens
    torch.testing.assert_close(attention_pool(xt, q, w), attention_pool(xt.contiguous(), q, w))
    assert attention_pool(torch.randn(0, 4, 6), q, w).shape == (0, 3, 6)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_float32_inside_autocast(backend):
    """Inside a bf16 autocast region (the training step) the pool computes as outside it, in
    float32 as the fast backends do: autocast must not turn its matmuls into bf16 ones."""
    x = torch.randn(4, 64, 32).bfloat16()
    q, w = torch.randn(3, 16), torch.randn(16, 32)
    want = attention_pool(x, q, w, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention_pool(x, q, w, backend=backend)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_default_scale_is_inverse_sqrt_dk():
    x, q, w = torch.randn(2, 5, 4), torch.randn(3, 9), torch.randn(9, 4)
    torch.testing.assert_close(attention_pool(x, q, w), attention_pool(x, q, w, scale=1 / 3))
    assert math.isclose(1 / math.sqrt(9), 1 / 3)


def test_modules():
    pool = AttentionPool(6, num_queries=3, key_dim=4)
    tok = torch.randn(2, 5, 6)
    torch.testing.assert_close(pool(tok), sdpa_form(tok, pool.query, pool.key_weight))
    head = PartHead(6, num_parts=3, key_dim=4, part_dim=10)
    assert head(tok).shape == (2, 3, 10)


@pytest.mark.parametrize(
    "args,exc,match",
    [
        (
            (torch.randn(5, 4), torch.randn(3, 2), torch.randn(2, 4)),
            ValueError,
            r"'x' must have shape \(B, N, C\)",
        ),
        (
            (torch.randn(2, 5, 4), torch.randn(3, 2), torch.randn(3, 4)),
            ValueError,
            r"Dk \(query size\)",
        ),
        (
            (torch.randn(2, 5, 4), torch.randn(3, 2), torch.randn(2, 5)),
            ValueError,
            r"C \(channels\)",
        ),
        ((torch.randn(2, 0, 4), torch.randn(3, 2), torch.randn(2, 4)), ValueError, r"N = 0"),
        (
            (torch.randn(2, 5, 4).int(), torch.randn(3, 2), torch.randn(2, 4)),
            TypeError,
            "'x' must have dtype",
        ),
        (
            (torch.randn(2, 5, 4), torch.randn(3, 2, device="meta"), torch.randn(2, 4)),
            ValueError,
            "'query' must be on device",
        ),
    ],
)
def test_bad_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        attention_pool(*args)
    with pytest.raises(ValueError, match="'scale' must be > 0"):
        attention_pool(torch.randn(2, 5, 4), torch.randn(3, 2), torch.randn(2, 4), scale=-1.0)


# ---- fast backends (Triton: CUDA, or the interpreter on CPU) -------------------------------

import hypothesis.strategies as st  # noqa: E402
from helpers import DEVICE, LOW, assert_matches, fast_backends  # noqa: E402
from hypothesis import given, settings  # noqa: E402

from arcdae_fast.ops import attn_pool as attn_pool_mod  # noqa: E402

FAST = fast_backends("attn_pool")


def run_case(b, n, c, k, dk, backend, dtype, seed=0, noncontig=False, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x64 = torch.randn(b, n, c, generator=g, dtype=torch.float64) * scale
    q64 = torch.randn(k, dk, generator=g, dtype=torch.float64)
    w64 = torch.randn(dk, c, generator=g, dtype=torch.float64) / c**0.5
    go64 = torch.randn(b, k, c, generator=g, dtype=torch.float64)
    if noncontig:
        x64 = x64.transpose(1, 2).contiguous().transpose(1, 2)

    def go(x, q, w, be, dev, dt):
        x = x.to(dev, dt).detach().requires_grad_()
        q, w = (t.to(dev).detach().requires_grad_() for t in (q, w))  # parameters stay fp32
        out = attention_pool(x, q, w, backend=be)
        return [out, *torch.autograd.grad(out, (x, q, w), go64.to(dev, out.dtype))]

    f32 = torch.float64 if dtype == torch.float64 else torch.float32
    truth = go(x64, q64, w64, "reference", "cpu", torch.float64)
    ref = go(x64, q64.to(f32), w64.to(f32), "reference", "cpu", dtype)
    fast = go(x64, q64.to(f32), w64.to(f32), backend, DEVICE, dtype)
    for name, f, r, t in zip(("out", "dx", "dquery", "dkey_weight"), fast, ref, truth):
        assert_matches(f, r, t, attn_pool_mod.TOL[dtype], f"{backend}/{dtype}/{name}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "shape", [(1, 1, 3, 1, 2), (2, 7, 5, 3, 4), (3, 70, 40, 9, 6), (2, 33, 300, 8, 16)]
)
def test_fast_backend_matches_float64_reference(backend, dtype, shape):
    run_case(*shape, backend, dtype)


@pytest.mark.parametrize("backend", FAST)
def test_fast_backend_noncontiguous_and_large_magnitudes(backend):
    run_case(2, 19, 24, 5, 8, backend, torch.float32, noncontig=True, scale=30.0)


@pytest.mark.parametrize("backend", FAST)
@settings(max_examples=8, deadline=None)
@given(
    b=st.integers(1, 3),
    n=st.integers(1, 50),
    c=st.integers(1, 40),
    k=st.integers(1, 9),
    dk=st.integers(1, 12),
    seed=st.integers(0, 10**6),
)
def test_fast_backend_fuzz(backend, b, n, c, k, dk, seed):
    run_case(b, n, c, k, dk, backend, torch.float32, seed=seed)


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    x = torch.randn(2, 6, 5, device=DEVICE, requires_grad=True)
    q = torch.randn(3, 4, device=DEVICE, requires_grad=True)
    w = torch.randn(4, 5, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.arcdae_fast.attn_pool.default, (x, q, w, 0.5, backend))


@pytest.mark.parametrize("backend", FAST)
def test_empty_batch(backend):
    x = torch.randn(0, 4, 6, device=DEVICE)
    q, w = torch.randn(3, 4, device=DEVICE), torch.randn(4, 6, device=DEVICE)
    assert attention_pool(x, q, w, backend=backend).shape == (0, 3, 6)
