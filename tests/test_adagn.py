import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arcdae_fast.ops import adagn
from arcdae_fast.ops import adagn as adagn_fn


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
    with pytest.raises(ValueError, match="each group must hold more than one value"):
        adagn(torch.randn(2, 8, 1, 1), None, None, s, s, groups=8)


# ---- fast backends (C++/CUDA extension) ----------------------------------------------------

import hypothesis.strategies as st  # noqa: E402
from helpers import DEVICE, LOW, assert_matches, fast_backends  # noqa: E402
from hypothesis import given, settings  # noqa: E402

adagn_mod = __import__("importlib").import_module("arcdae_fast.ops.adagn")

FAST = fast_backends("adagn")


def fast_case(
    b,
    c,
    h,
    w,
    g,
    backend,
    dtype,
    *,
    channels_last=False,
    affine=True,
    zs=True,
    noncontig=False,
    seed=0,
    scale=1.0,
):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    x64, go64 = r(b, c, h, w) * scale + 0.5 * scale, r(b, c, h, w)
    params = [
        r(c) if affine else None,
        r(c) if affine else None,
        r(b, c) * 0.5,
        r(b, c),
        r(b, c) * 0.5 if zs else None,
    ]

    def go(be, dev, dt):
        x = x64.to(dev, dt)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        if noncontig:
            x = x.transpose(2, 3).contiguous().transpose(2, 3)
        x.requires_grad_()
        pdt = torch.float64 if dt == torch.float64 else torch.float32
        ps = [None if p is None else p.to(dev, pdt).requires_grad_() for p in params]
        y = adagn_fn(x, *ps, groups=g, backend=be)
        leaves = [x] + [p for p in ps if p is not None]
        return [y, *torch.autograd.grad(y, leaves, go64.to(dev, y.dtype))]

    truth = go("reference", "cpu", torch.float64)
    ref = go("reference", "cpu", dtype)
    fast = go(backend, DEVICE, dtype)
    assert fast[0].dtype == dtype
    if channels_last:
        assert fast[0].is_contiguous(memory_format=torch.channels_last)
    names = ["y", "dx", "dweight", "dbias", "dscale", "dshift", "dzscale"]
    if not affine:
        names = [n for n in names if n not in ("dweight", "dbias")]
    for name, f, rr, t in zip(names, fast, ref, truth):
        assert_matches(f, rr, t, adagn_mod.TOL[dtype], f"{backend}/{dtype}/{name}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 5, 7, 4), (1, 3, 1, 1, 1), (3, 32, 9, 9, 8)])
def test_fast_backend_matches_float64_reference(backend, dtype, channels_last, shape):
    fast_case(*shape, backend, dtype, channels_last=channels_last)


@pytest.mark.parametrize("backend", FAST)
def test_fast_backend_without_affine_or_zscale_noncontiguous_large(backend):
    fast_case(2, 12, 6, 5, 3, backend, torch.float32, affine=False, zs=False)
    fast_case(2, 12, 6, 5, 3, backend, torch.float32, noncontig=True, scale=100.0)


@pytest.mark.parametrize("backend", FAST)
@settings(max_examples=10, deadline=None)
@given(
    b=st.integers(1, 3),
    g=st.integers(1, 4),
    cg=st.integers(1, 5),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    cl=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_fast_backend_fuzz(backend, b, g, cg, h, w, cl, seed):
    if cg * h * w < 2:
        return  # a one-value group is rejected (tested in test_bad_inputs)
    fast_case(b, g * cg, h, w, g, backend, torch.float32, channels_last=cl, seed=seed)


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    x = torch.randn(2, 8, 3, 5, device=DEVICE, requires_grad=True)
    p = [
        torch.randn(*s, device=DEVICE, requires_grad=True)
        for s in ((8,), (8,), (2, 8), (2, 8), (2, 8))
    ]
    torch.library.opcheck(torch.ops.arcdae_fast.adagn.default, (x, *p, 4, 1e-5, backend))
    torch.library.opcheck(
        torch.ops.arcdae_fast.adagn.default,
        (x.to(memory_format=torch.channels_last), None, None, p[2], p[3], None, 2, 1e-5, backend),
    )


@pytest.mark.parametrize("backend", FAST)
def test_compiled_unet_block_uses_one_adagn_node(backend):
    """The model picks the backend up from the process-level setting (use_backend), also
    inside a compiled graph."""
    from arcdae_fast.models.layers import ResBlock
    from arcdae_fast.ops import use_backend

    torch._dynamo.reset()
    block = ResBlock(8, 8, emb_ch=16, z_ch=6, max_groups=4).to(DEVICE)
    torch.nn.init.normal_(block.out_conv.weight, std=0.1)
    x = torch.randn(2, 8, 6, 6, device=DEVICE)
    emb, z = torch.randn(2, 16, device=DEVICE), torch.randn(2, 6, device=DEVICE)
    seen = []

    def backend_fn(gm, example_inputs):
        seen.append(gm)
        return gm

    with use_backend(f"adagn={backend}"):
        compiled = torch.compile(block, backend=backend_fn, fullgraph=True)
        out = compiled(x, emb, z)
        torch.testing.assert_close(out, block(x, emb, z))
        nodes = [n.target for n in seen[0].graph.nodes if n.op == "call_function"]
        fused = (torch.ops.arcdae_fast.adagn, torch.ops.arcdae_fast.adagn.default)
        assert sum(t in fused for t in nodes) == 1, nodes
        real = torch.compile(block, fullgraph=True)  # and through Inductor, forward + backward
        out = real(x, emb, z)
        out.square().mean().backward()
    assert block.emb.weight.grad is not None and torch.isfinite(block.emb.weight.grad).all()
