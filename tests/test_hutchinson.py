import pytest
import torch
from torch import nn

from arcdae_fast.ops import hutchinson_penalty


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).double()


def exact_jacobians(net, x):
    """Per-sample Jacobians (B, out, in) from autograd's full Jacobian."""
    return torch.stack(
        [
            torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], x[i]).reshape(5, -1)
            for i in range(x.shape[0])
        ]
    )


@pytest.mark.parametrize("estimator", ["jvp", "fd"])
def test_fixed_probe_equals_exact_jv(estimator):
    net = small_net()
    x = torch.randn(3, 3, 3, 3, dtype=torch.float64)
    v = torch.randint(0, 2, (2, *x.shape)).double() * 2 - 1
    jac = exact_jacobians(net, x)
    want = torch.stack(
        [(torch.einsum("boi,bi->bo", jac, v[k].flatten(1)) ** 2).sum(1) for k in range(2)]
    ).mean(0)
    w = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    got = hutchinson_penalty(net, x, w, estimator=estimator, probes=2, vectors=v, fd_eps=1e-6)
    assert got.dtype == torch.float64 and got.shape == (3,)
    torch.testing.assert_close(got.double(), want * w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("estimator,probe", [("jvp", "rademacher"), ("fd", "gaussian")])
def test_mean_over_many_probes_is_trace(estimator, probe):
    net = small_net()
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    trace = (exact_jacobians(net, x) ** 2).sum((1, 2))  # Tr(J^T J) = ||J||_F^2
    g = torch.Generator().manual_seed(0)
    est = hutchinson_penalty(
        net, x, estimator=estimator, probes=200, probe=probe, generator=g, fd_eps=1e-6
    )
    torch.testing.assert_close(est.double(), trace, rtol=0.12, atol=0)


def test_gradients_reach_parameters_and_fx_reuse():
    net = small_net().float()
    x = torch.randn(2, 3, 3, 3)
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 2, (1, *x.shape), generator=g).float() * 2 - 1
    a = hutchinson_penalty(net, x, estimator="fd", vectors=v)
    b = hutchinson_penalty(net, x, estimator="fd", vectors=v, fx=net(x))
    torch.testing.assert_close(a, b)
    for est in ("fd", "jvp"):
        net.zero_grad()
        hutchinson_penalty(net, x, estimator=est, vectors=v).sum().backward()
        assert net[0].weight.grad.abs().sum() > 0


def test_bad_inputs():
    net = small_net()
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="'fn' must be callable"):
        hutchinson_penalty(3, x)
    with pytest.raises(ValueError, match="'estimator' must be one of"):
        hutchinson_penalty(net, x, estimator="exact")
    with pytest.raises(ValueError, match="'probes' must be an int >= 1"):
        hutchinson_penalty(net, x, probes=0)
    with pytest.raises(ValueError, match=r"'weight' must have shape \(2\)"):
        hutchinson_penalty(net, x, torch.ones(3))
    with pytest.raises(ValueError, match="'fd_eps' must be > 0"):
        hutchinson_penalty(net, x, fd_eps=0.0)
    with pytest.raises(
        ValueError,
        match=r"fn\(x\) must return one output per input row, "
        r"shape \(4, ...\) for the 4 rows",
    ):
        hutchinson_penalty(lambda t: t.sum(), x)  # x and one perturbed copy: 4 rows
    with pytest.raises(ValueError, match="'fx' is only used"):
        hutchinson_penalty(net, x, estimator="jvp", fx=net(x))
    with pytest.raises(ValueError, match="empty batch"):
        hutchinson_penalty(net, x[:0])
    with pytest.raises(ValueError, match="'vectors' must have shape"):
        hutchinson_penalty(net, x, vectors=torch.ones(2, *x.shape))


def test_fd_is_one_batched_call():
    net = small_net()
    x = torch.randn(3, 3, 3, 3, dtype=torch.float64)
    rows = []

    def fn(t):
        rows.append(t.shape[0])
        return net(t)

    hutchinson_penalty(fn, x, probes=2)
    hutchinson_penalty(fn, x, probes=2, fx=net(x))
    assert rows == [9, 6]  # [x, x + e v1, x + e v2]; with fx given, only the perturbed
