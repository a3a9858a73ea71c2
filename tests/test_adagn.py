import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arcdae_fast.ops import adagn


def module_form(x, norm, scale, shift, zscale):
    h = norm(x) * (1 + scale[..., None, None]) + shift[..., None, None]
    if zscale is not None:
        h = h * (1 + zscale[..., None, None])
    return F.silu(h)


@pytest.mark.parametrize("with_z", [False, True])
def test_matches_groupnorm_module(with_z):
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 8).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(3, 8, 5, 7, dtype=torch.float64, requires_grad=True)
    s, b = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    z = torch.randn(3, 8, dtype=torch.float64) if with_z else None
    got = adagn(x, norm.weight, norm.bias, s, b, z, groups=4)
    torch.testing.assert_close(got, module_form(x, norm, s, b, z))
    assert torch.autograd.gradcheck(
        lambda t: adagn(t, norm.weight, norm.bias, s, b, z, groups=4), (x,)
    )


def test_channels_last_and_bf16():
    x = torch.randn(2, 8, 4, 4)
    args = (None, None, torch.randn(2, 8), torch.randn(2, 8))
    ref = adagn(x, *args, groups=2)
    torch.testing.assert_close(adagn(x.to(memory_format=torch.channels_last), *args, groups=2), ref)
    out = adagn(x.bfloat16(), *args, groups=2)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=2e-2)


def test_bad_inputs():
    x, s = torch.randn(2, 8, 4, 4), torch.randn(2, 8)
    with pytest.raises(ValueError, match="'groups' must be a positive divisor of C=8"):
        adagn(x, None, None, s, s, groups=3)
    with pytest.raises(ValueError, match=r"'scale' must have shape \(2, 8\)"):
        adagn(x, None, None, s[:1], s, groups=2)
    with pytest.raises(ValueError, match=r"'weight' must have shape \(8\)"):
        adagn(x, torch.ones(4), None, s, s, groups=2)
    with pytest.raises(ValueError, match=r"'x' must have shape \(B, C, \*, \*\)"):
        adagn(x[0], None, None, s, s, groups=2)
