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
