"""Every C++ primitive of arcdae_fast._C (namespace arcdae_fast_C) passes torch.library.opcheck
on CPU: its schema (no output aliases an input), its fake kernel (shapes, dtypes, strides of
the real one) and dispatch."""

import pytest
import torch

from arcdae_fast.ops import _ext

pytestmark = pytest.mark.skipif(_ext.load_error() is not None, reason="extension not built")
C = torch.ops.arcdae_fast_C
g = torch.Generator().manual_seed(0)


def rnd(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=g).to(dtype)


def augment_params(b):
    p = torch.zeros(b, 9)
    p[:, 0:2], p[:, 2:4], p[:, 5:8] = 0.5, 0.8, 1.0  # centred crop, identity colours
    return p


CASES = {
    "adagn_forward": lambda dt: (
        rnd(2, 8, 5, 5, dtype=dt),
        rnd(8),
        rnd(8),
        rnd(2, 8),
        rnd(2, 8),
        rnd(2, 8),
        4,
        1e-5,
    ),
    "augment_forward": lambda dt: (
        rnd(2, 3, 6, 6, dtype=dt),
        augment_params(2),
        torch.rand(2),
        torch.rand(2),
        rnd(2, 3, 6, 6, dtype=dt),
        0,
        0,
    ),
    "augment_forward/draw": lambda dt: (
        rnd(2, 3, 6, 6, dtype=dt),
        augment_params(2),
        torch.rand(2),
        torch.rand(2),
        None,
        3,
        1,
    ),
    "infonce_forward": lambda dt: (
        rnd(6, 4, dtype=dt),
        rnd(6, 4, dtype=dt),
        torch.rand(6) + 0.5,
        torch.rand(6) + 0.5,
        10.0,
    ),
    "attn_pool_forward": lambda dt: (rnd(2, 7, 5, dtype=dt), rnd(3, 5)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(CASES))
def test_forward_primitives_pass_opcheck(name, dtype):
    op = getattr(C, name.split("/")[0]).default
    torch.library.opcheck(op, CASES[name](dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_primitives_pass_opcheck(dtype):
    x, w, b, s, sh, z = CASES["adagn_forward"](dtype)[:6]
    y, mean, rstd, sig = C.adagn_forward(x, w, b, s, sh, z, 4, 1e-5)
    torch.library.opcheck(
        C.adagn_backward.default, (torch.randn_like(y), x, w, b, s, sh, z, mean, rstd, sig, 4)
    )
    torch.library.opcheck(
        C.adagn_backward.default,
        (torch.randn_like(y), x, None, None, s, sh, None, mean, rstd, sig, 4),
    )
    q, k, iq, ik, scale = CASES["infonce_forward"](dtype)
    lse = C.infonce_forward(q, k, iq, ik, scale)
    lse_c = C.infonce_forward(k, q, ik, iq, scale)
    c = torch.rand(6)
    torch.library.opcheck(C.infonce_backward.default, (q, k, iq, ik, scale, lse, c, lse_c, c))
    torch.library.opcheck(C.infonce_backward.default, (q, k, iq, ik, scale, lse, c, None, None))
    x, qk = CASES["attn_pool_forward"](dtype)
    out, lse = C.attn_pool_forward(x, qk)
    dout = torch.randn_like(out)
    delta = (dout.float() * out.float()).sum(-1)
    torch.library.opcheck(C.attn_pool_backward.default, (dout, x, qk, delta, lse))


def test_augment_never_returns_the_callers_noise():
    x, p, a, s, noise = CASES["augment_forward"](torch.float32)[:5]
    third = C.augment_forward(x, p, a, s, noise, 0, 0)[2]
    assert third.numel() == 0  # given noise: an empty third output, not an alias of it
    drawn = C.augment_forward(x, p, a, s, None, 3, 1)[2]
    assert drawn.shape == x.shape and drawn.std() > 0.5
