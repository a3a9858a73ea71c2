import math

import pytest
import torch

from arcdae_fast.diffusion import (
    VPSchedule,
    ddim_invert,
    ddim_sample,
    ddim_timesteps,
    split_prediction,
    training_target,
)


def test_linear_schedule_closed_form():
    s = VPSchedule("linear", 1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    i = torch.tensor([0, 1, 10, 500, 999])
    a, sg = s.alpha_sigma(i)
    torch.testing.assert_close(a.double(), ab[i].sqrt(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sg.double(), (1 - ab[i]).sqrt(), rtol=1e-6, atol=1e-7)
    assert abs(float(ab[0]) - (1 - 1e-4)) < 1e-12
    torch.testing.assert_close((a**2 + sg**2), torch.ones(5), rtol=0, atol=1e-6)


def test_cosine_schedule_closed_form():
    T, s_ = 1000, 0.008
    s = VPSchedule("cosine", T)
    f = lambda t: math.cos((t + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    for i in (0, 10, 300, 700, 950):  # before beta clipping kicks in
        want = f((i + 1) / T) / f(0)
        assert abs(float(s.alphas_cumprod[i]) - want) < 1e-12
    assert float(s.alphas_cumprod[-1]) > 0  # clipped betas keep SNR > 0 at t = 1


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_log_snr_matches_snr_and_is_decreasing(kind):
    s = VPSchedule(kind)
    i = torch.arange(1000)
    a, sg = s.alpha_sigma(i)
    torch.testing.assert_close(s.snr(i), (a**2 / sg**2), rtol=2e-4, atol=0)
    assert (s.log_snr(i).diff() < 0).all()


def test_omega_limits_and_monotonicity():
    s = VPSchedule("linear")
    i = torch.arange(1000)
    for tau in (0.5, 1.0, 2.0):
        w = s.omega(i, tau)
        assert (
            (w.diff() <= 0).all() and (w > 0).all() and (w <= 1).all()
        )  # float32: 1 - 1e-8 rounds to 1
        assert w[0] > 0.99 and w[-1] < 0.01
    # sharper gate for smaller tau: further from 1/2 at both ends
    assert s.omega(i[:1], 0.5) > s.omega(i[:1], 2.0)
    assert s.omega(i[-1:], 0.5) < s.omega(i[-1:], 2.0)
    with pytest.raises(ValueError, match="tau"):
        s.omega(i, 0.0)


def test_gamma_and_time():
    s = VPSchedule("linear", 1000)
    i = torch.tensor([0, 499, 999])
    torch.testing.assert_close(s.t_continuous(i), torch.tensor([0.001, 0.5, 1.0]))
    torch.testing.assert_close(s.gamma(i, 0.8, 2.0), 0.8 * torch.tensor([0.001, 0.5, 1.0]) ** 2)


def test_q_sample():
    s = VPSchedule("linear")
    x0, eps = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    i = torch.tensor([0, 100, 999])
    a, sg = s.alpha_sigma(i)
    torch.testing.assert_close(
        s.q_sample(x0, i, eps), a.view(3, 1, 1, 1) * x0 + sg.view(3, 1, 1, 1) * eps
    )
    with pytest.raises(TypeError, match="integer"):
        s.q_sample(x0, i.float(), eps)


@pytest.mark.parametrize("param", ["eps", "v", "x0"])
def test_parameterizations_roundtrip(param):
    s = VPSchedule("linear")
    x0, eps = (
        torch.randn(4, 3, 2, 2, dtype=torch.float64),
        torch.randn(4, 3, 2, 2, dtype=torch.float64),
    )
    i = torch.tensor([3, 200, 600, 990])
    a, sg = (v.double() for v in s.alpha_sigma(i))
    x_t = a.view(-1, 1, 1, 1) * x0 + sg.view(-1, 1, 1, 1) * eps
    x0_hat, eps_hat = split_prediction(param, training_target(param, x0, eps, a, sg), x_t, a, sg)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)


def _oracle(x_data, schedule):
    """A perfect eps-predictor for a dataset of exactly these images."""

    def model(x, i, z):
        a, s = schedule.alpha_sigma(i)
        return (x - a.view(-1, 1, 1, 1) * x_data) / s.view(-1, 1, 1, 1)

    return model


def test_ddim_with_oracle_recovers_data_and_inversion_roundtrips():
    s = VPSchedule("linear")
    x_data = torch.rand(2, 3, 4, 4) * 1.8 - 0.9
    model = _oracle(x_data, s)
    z = torch.zeros(2, 1)
    out = ddim_sample(model, z, s, torch.randn(2, 3, 4, 4), steps=10)
    torch.testing.assert_close(out, x_data, atol=1e-4, rtol=0)
    x_T = ddim_invert(model, x_data, z, s, steps=10)
    back = ddim_sample(model, z, s, x_T, steps=10)
    torch.testing.assert_close(back, x_data, atol=1e-4, rtol=0)


def test_ddim_timesteps():
    seq = ddim_timesteps(1000, 50)
    assert seq[0] == 0 and seq[-1] == 999 and len(seq) == 50 and seq == sorted(seq)
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 0)


def test_bad_schedule():
    with pytest.raises(ValueError, match="schedule"):
        VPSchedule("quadratic")
