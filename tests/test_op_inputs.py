"""Bad and awkward inputs to the public ops, on every backend that runs here (the Triton
kernels under the interpreter): one validation layer per op refuses what the backends would
compute differently, NaN in data propagates identically, meta tensors give shapes."""

import re

import pytest
import torch
from helpers import fast_backends

from arcdae_fast.ops import (
    adagn,
    attention_pool,
    hutchinson_penalty,
    sample_augment_params,
    snr_gate,
    snr_weighted_infonce,
    timestep_augment,
    timestep_augment_with_noise,
)

AUGMENT = ["reference", *fast_backends("augment")]


def params(b=2):
    return sample_augment_params(torch.full((b,), 0.7), torch.Generator().manual_seed(0))


def inputs(b=2):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, 3, 8, 8, generator=g) * 2 - 1
    return (
        x,
        params(b),
        torch.full((b,), 0.8),
        torch.full((b,), 0.6),
        torch.randn(b, 3, 8, 8, generator=g),
    )


@pytest.mark.parametrize("backend", AUGMENT)
@pytest.mark.parametrize(
    "column,value,needle",
    [
        (2, float("nan"), "w=nan at row 1 (column 2); it must be positive and finite"),
        (0, float("inf"), "cx=inf at row 1 (column 0); it must be finite"),
        (3, 0.0, "h=0.0 at row 1"),
        (4, 0.5, "flip=0.5 at row 1 (column 4); it must be 0 or 1"),
        (7, -3.0, "saturation=-3.0 at row 1"),
        (8, 1e4, "hue=10000.0 at row 1 (column 8); it must be in [-1, 1] (turns)"),
    ],
)
def test_bad_augmentation_params_are_refused_by_name_on_every_backend(
    backend, column, value, needle
):
    x, p, a, s, n = inputs()
    p[1, column] = value
    msg = re.escape(f"timestep_augment: argument 'params' has {needle}")
    with pytest.raises(ValueError, match=msg):
        timestep_augment(x, p, a, s, n, backend=backend)
    with pytest.raises(ValueError, match="timestep_augment_with_noise: argument 'params'"):
        timestep_augment_with_noise(x, p, a, s, seed=1, backend=backend)


@pytest.mark.parametrize("backend", AUGMENT[1:])
def test_a_nan_pixel_propagates_as_in_the_reference(backend):
    x, p, a, s, n = inputs()
    x[0, 1, 3, 4] = float("nan")
    want = timestep_augment(x, p, a, s, n, backend="reference")
    got = timestep_augment(x, p, a, s, n, backend=backend)
    for w, g in zip(want, got):
        assert torch.equal(torch.isnan(w), torch.isnan(g))
        assert torch.isnan(w).any()
        ok = ~torch.isnan(w)
        torch.testing.assert_close(g[ok], w[ok], atol=1e-5, rtol=0)


def test_sample_augment_params_names_a_wrong_generator():
    with pytest.raises(
        TypeError, match="argument 'generator' must be a torch.Generator or None, got int"
    ):
        sample_augment_params(torch.rand(3), 7)


def test_hutchinson_refuses_what_would_be_wrong():
    lin = torch.nn.Linear(6, 2)

    def fn(x):
        return lin(x.float())

    x = torch.randn(4, 6)
    with pytest.raises(
        TypeError, match="estimator 'fd' needs x in float32 or float64, got torch.float16"
    ):
        hutchinson_penalty(fn, x.half())
    with pytest.raises(TypeError, match="argument 'fx' must have dtype"):
        hutchinson_penalty(fn, x, fx=torch.zeros(4, 2, dtype=torch.int64))
    assert hutchinson_penalty(fn, x.half(), estimator="jvp").shape == (4,)  # exact: fine


def test_meta_tensors_give_shapes():
    m = torch.device("meta")

    def t(*s):
        return torch.empty(*s, device=m)

    assert snr_weighted_infonce(t(5, 3), t(5, 3), t(5)).shape == ()
    assert snr_weighted_infonce(t(5, 3), t(5, 3), reduction="none").shape == (5,)
    assert attention_pool(t(2, 5, 3), t(4, 6), t(6, 3)).shape == (2, 4, 3)
    assert adagn(t(2, 4, 3, 3), None, None, t(2, 4), t(2, 4), groups=2).shape == (2, 4, 3, 3)
    assert [
        v.shape for v in timestep_augment(t(2, 3, 4, 4), t(2, 9), t(2), t(2), t(2, 3, 4, 4))
    ] == [(2, 3, 4, 4)] * 2
    assert timestep_augment_with_noise(t(2, 3, 4, 4), t(2, 9), t(2), t(2), seed=1)[2].shape == (
        2,
        3,
        4,
        4,
    )
    assert sample_augment_params(t(3)).shape == (3, 9)
    assert snr_gate(t(3)).shape == (3,)
    assert hutchinson_penalty(lambda x: x.flatten(1), t(2, 3), vectors=t(1, 2, 3)).shape == (2,)
