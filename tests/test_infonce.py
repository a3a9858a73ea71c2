import pytest
import torch
import torch.nn.functional as F

from arcdae_fast.ops import snr_weighted_infonce


def cross_entropy_form(q, k, w, tau, symmetric, normalize=True):
    """InfoNCE written with F.cross_entropy (the independent formulation)."""
    q, k = q.double(), k.double()
    if normalize:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.T / tau
    labels = torch.arange(q.shape[0])
    loss = F.cross_entropy(logits, labels, reduction="none")
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, labels, reduction="none"))
    return loss * (w.double() if w is not None else 1.0)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_cross_entropy(symmetric, weighted, normalize):
    g = torch.Generator().manual_seed(0)
    n, d = 13, 7
    q, k = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    w = torch.rand(n, generator=g) if weighted else None
    want = cross_entropy_form(q, k, w, 0.2, symmetric, normalize)
    kw = dict(normalize=normalize, symmetric=symmetric)
    torch.testing.assert_close(
        snr_weighted_infonce(q.double(), k.double(), w, 0.2, reduction="none", **kw), want
    )
    torch.testing.assert_close(
        snr_weighted_infonce(q, k, w, 0.2, **kw).double(), want.mean(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        snr_weighted_infonce(q, k, w, 0.2, reduction="sum", **kw).double(),
        want.sum(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_mean_is_not_normalized_by_weight_sum():
    q, k = torch.randn(6, 4), torch.randn(6, 4)
    w = torch.full((6,), 0.25)
    full = snr_weighted_infonce(q, k)
    torch.testing.assert_close(snr_weighted_infonce(q, k, w), 0.25 * full)


def test_gradients_for_query_and_key():
    q = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(5, dtype=torch.float64)
    for sym in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b, s=sym: snr_weighted_infonce(a, b, w, 0.3, symmetric=s), (q, k)
        )
    loss = snr_weighted_infonce(q, k, w, 0.3)
    gq, gk = torch.autograd.grad(loss, (q, k))
    rq, rk = torch.autograd.grad(cross_entropy_form(q, k, w, 0.3, False).mean(), (q, k))
    torch.testing.assert_close(gq, rq)
    torch.testing.assert_close(gk, rk)


def test_low_precision_inputs_compute_in_float32():
    q, k = torch.randn(9, 16), torch.randn(9, 16)
    out = snr_weighted_infonce(q.bfloat16(), k.bfloat16())
    assert out.dtype == torch.float32
    want = cross_entropy_form(q.bfloat16().float(), k.bfloat16().float(), None, 0.1, False).mean()
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_float32_inside_autocast(backend):
    """A loss called inside a bf16 autocast region (the training step) still computes in
    float32: autocast must not turn the logit matmul into a bf16 one."""
    q, k = torch.randn(33, 16), torch.randn(33, 16)
    w = torch.rand(33)
    want = snr_weighted_infonce(q.bfloat16(), k.bfloat16(), w, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = snr_weighted_infonce(q.bfloat16(), k.bfloat16(), w, backend=backend)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_single_row_and_noncontiguous():
    q, k = torch.randn(1, 5), torch.randn(1, 5)
    assert float(snr_weighted_infonce(q, k)) == pytest.approx(0.0, abs=1e-6)
    big = torch.randn(8, 10)
    q, k = big[:, ::2], big.T[::2, :8].T  # strided views
    torch.testing.assert_close(
        snr_weighted_infonce(q, k), snr_weighted_infonce(q.contiguous(), k.contiguous())
    )


def test_nan_propagates():
    q = torch.randn(4, 3)
    q[1, 0] = float("nan")
    assert torch.isnan(snr_weighted_infonce(q, torch.randn(4, 3)))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (
            dict(query=torch.randn(4), key=torch.randn(4, 3)),
            ValueError,
            r"'query' must have shape \(N, D\)",
        ),
        (
            dict(query=torch.randn(4, 3), key=torch.randn(5, 3)),
            ValueError,
            r"N \(rows\) must match",
        ),
        (dict(query=torch.randn(4, 3), key=torch.randn(4, 2)), ValueError, r"D \(feature size\)"),
        (dict(query=torch.ones(4, 3, dtype=torch.long), key=torch.randn(4, 3)), TypeError, "dtype"),
        (dict(query=torch.randn(0, 3), key=torch.randn(0, 3)), ValueError, "empty batch"),
        (
            dict(query=torch.randn(4, 3), key=torch.randn(4, 3), weight=torch.rand(3)),
            ValueError,
            r"'weight' must have shape \(4\)",
        ),
        (
            dict(query=torch.randn(4, 3), key=torch.randn(4, 3), temperature=0.0),
            ValueError,
            "'temperature' must be > 0",
        ),
        (
            dict(query=torch.randn(4, 3), key=torch.randn(4, 3), reduction="avg"),
            ValueError,
            "'reduction' must be one of",
        ),
        (
            dict(query=torch.randn(4, 3), key=torch.randn(4, 3), backend="cudnn"),
            ValueError,
            "unknown backend 'cudnn'",
        ),
        (
            dict(query=torch.randn(4, 3), key=torch.randn(4, 3, device="meta")),
            ValueError,
            "'key' must be on device cpu",
        ),
    ],
)
def test_bad_inputs(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        snr_weighted_infonce(**kwargs)


# ---- fast backends (Triton: CUDA, or the interpreter on CPU) -------------------------------

import hypothesis.strategies as st  # noqa: E402
from helpers import DEVICE, LOW, assert_matches, fast_backends  # noqa: E402
from hypothesis import given, settings  # noqa: E402

from arcdae_fast.ops import infonce as infonce_mod  # noqa: E402

FAST = fast_backends("infonce")


def run_case(
    n, d, backend, dtype, *, symmetric, normalize, weighted=True, seed=0, transpose=False, scale=1.0
):
    g = torch.Generator().manual_seed(seed)
    q64 = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    k64 = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    if transpose:  # non-contiguous views with the same values
        q64, k64 = q64.T.contiguous().T, k64.T.contiguous().T
    w64 = torch.rand(n, generator=g, dtype=torch.float64) if weighted else None
    kw = dict(temperature=0.2, symmetric=symmetric, normalize=normalize)

    def go(q, k, w, be, dev):
        q = q.to(dev).detach().requires_grad_()
        k = k.to(dev).detach().requires_grad_()
        w = None if w is None else w.to(dev).detach().requires_grad_()
        out = snr_weighted_infonce(q, k, w, backend=be, **kw)
        grads = torch.autograd.grad(out, [t for t in (q, k, w) if t is not None])
        return [out, *grads]

    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    truth = go(q64, k64, w64, "reference", "cpu")
    ref = go(cast(q64), cast(k64), cast(w64), "reference", "cpu")
    fast = go(cast(q64), cast(k64), cast(w64), backend, DEVICE)
    tol = infonce_mod.TOL[dtype]
    for name, f, r, t in zip(("loss", "dquery", "dkey", "dweight"), fast, ref, truth):
        assert_matches(f, r, t, tol, f"{backend}/{dtype}/{name}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize(
    "n,d,symmetric,normalize",
    [(1, 5, False, True), (13, 7, True, True), (67, 33, False, False), (130, 160, True, True)],
)
def test_fast_backend_matches_float64_reference(backend, dtype, n, d, symmetric, normalize):
    run_case(n, d, backend, dtype, symmetric=symmetric, normalize=normalize)


@pytest.mark.parametrize("backend", FAST)
def test_fast_backend_noncontiguous_unweighted_and_large_magnitudes(backend):
    run_case(
        37,
        19,
        backend,
        torch.float32,
        symmetric=True,
        normalize=True,
        weighted=False,
        transpose=True,
        scale=1e3,
    )


@pytest.mark.parametrize("backend", FAST)
@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(1, 90),
    d=st.integers(1, 70),
    symmetric=st.booleans(),
    normalize=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_fast_backend_fuzz(backend, n, d, symmetric, normalize, seed):
    run_case(n, d, backend, torch.float32, symmetric=symmetric, normalize=normalize, seed=seed)


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    q = torch.randn(9, 6, device=DEVICE, requires_grad=True)
    k = torch.randn(9, 6, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.arcdae_fast.infonce.default, (q, k, 0.1, True, True, backend))
    g = torch.randn(9, device=DEVICE)
    lse = torch.randn(9, device=DEVICE)
    torch.library.opcheck(
        torch.ops.arcdae_fast.infonce_backward.default,
        (g, q.detach(), k.detach(), lse, lse, 0.1, True, True, backend, True, True),
    )


@pytest.mark.parametrize("backend", FAST)
def test_key_gradient_skipped_for_stop_grad_teacher(backend):
    q = torch.randn(8, 4, device=DEVICE, requires_grad=True)
    k = torch.randn(8, 4, device=DEVICE)
    loss = snr_weighted_infonce(q, k, backend=backend)
    (gq,) = torch.autograd.grad(loss, q)
    (gr,) = torch.autograd.grad(snr_weighted_infonce(q, k, backend="reference"), q)
    torch.testing.assert_close(gq, gr, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (memory O(N*D) at scale)")
def test_runs_at_n_262144_where_naive_cannot():
    n, d = 262144, 128
    q = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    torch.cuda.reset_peak_memory_stats()
    loss = snr_weighted_infonce(q, k, backend="triton")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all()
    assert torch.cuda.max_memory_allocated() < 2 * 2**30  # naive: 262144^2 * 4 B = 256 GiB
