import pytest
import torch
from conftest import tiny_raw

from arcdae_fast.config import from_dict, load_config
from arcdae_fast.ema import frozen_copy
from arcdae_fast.methods import build
from arcdae_fast.methods.arcdae import ArcDAE
from arcdae_fast.models import build_denoiser, build_encoder
from arcdae_fast.step import EagerStep, build_optimizer


def builders(cfg):
    parts = (cfg.method.num_parts, cfg.method.part_key_dim, cfg.method.part_dim)
    enc = build_encoder(cfg.model, cfg.data.resolution, parts)
    return enc, build_denoiser(cfg.model, cfg.data.resolution, cfg.model.encoder.z_dim)


def test_shapes(tiny_cfg):
    enc, unet = builders(tiny_cfg)
    x = torch.randn(3, 3, 16, 16)
    codes = enc(x)
    assert codes.holo.shape == (3, 16) and codes.part.shape == (3, 2, 8)
    assert enc(x, parts=False).part is None
    out = unet(x, torch.tensor([0, 500, 999]), codes.holo)
    assert out.shape == x.shape


# Parameter counts per block of DiffAE's BeatGANs autoencoder, counted on DiffAE's own code
# (phizaz/diffae at 00c57d3: model/unet_autoenc.py with templates.py's ffhq128_autoenc_base
# and ffhq64_autoenc / celeba64d2c_autoenc; bench/diffae_fidelity.py --diffae-src DIR prints
# them). Denoiser: time_embed, input_blocks.*, middle_block, output_blocks.*, out; encoder:
# input_blocks.*, middle_block, out.
DIFFAE_BLOCKS = {
    "ffhq128": (
        [328704, 3584, 492672, 492672, 492672, 492672, 492672, 492672, 1313024, 1575168]
        + [1575168, 3495680, 3839616, 3247488, 5116672, 5509632, 12070912, 8394752, 8394752]
        + [13248768, 5954560, 5462784, 8218496, 2624768, 2296832, 3544064, 837376, 673280]
        + [1165952, 673280, 673280, 673280, 3715],
        [3584, 147840, 147840, 147840, 147840, 147840, 147840, 328448, 590592, 590592]
        + [1576448, 1920384, 1328256, 1967872, 2360832, 2360832, 2360832, 2360832, 5773312]
        + [263680],
    ),
    "ffhq64": (
        [295936, 1792, 172608, 172608, 172608, 427136, 492672, 492672, 1576704, 1838848]
        + [1575168, 4461056, 5509632, 12070912, 8394752, 8394752, 12593152, 3216384, 2560512]
        + [3807744, 837376, 673280, 1083904, 258944, 217856, 217856, 1859],
        [1792, 37056, 37056, 37056, 82304, 147840, 147840, 592128, 854272, 590592, 1312256]
        + [2360832, 2360832, 2360832, 2360832, 5773312, 263680],
    ),
}
DIFFAE_TOTALS = {"ffhq128": (103_871_619, 24_673_536), "ffhq64": (71_518_723, 19_320_512)}


def blocks_of(method):
    def n(*mods):
        return sum(p.numel() for m in mods for p in m.parameters())

    u, e = method.denoiser, method.encoder
    den = [n(u.time_embed), *(n(b) for b in u.down), n(u.middle), *(n(b) for b in u.up)]
    enc = [*(n(b) for b in e.down), n(e.middle), n(e.out_norm, e.holo_head)]
    return den + [n(u.out_norm, u.out_conv)], enc


@pytest.mark.parametrize(
    "preset,net", [("ffhq.yaml", "ffhq128"), ("ffhq64.yaml", "ffhq64"), ("celeba64.yaml", "ffhq64")]
)
@pytest.mark.parametrize("method", ["diffae", "arcdae"])
def test_presets_have_diffaes_parameter_counts_block_by_block(preset, net, method):
    with torch.device("meta"):
        model = build(load_config(preset, [f"method.name={method}"]))
    den, enc = blocks_of(model)
    assert den == DIFFAE_BLOCKS[net][0]
    assert enc == DIFFAE_BLOCKS[net][1]
    assert (sum(den), sum(enc)) == DIFFAE_TOTALS[net]
    part = model.encoder.part_head
    if method == "diffae":  # ArcDAE's part head is an addition on top of DiffAE's encoder
        assert part is None
    else:
        assert sum(p.numel() for p in part.parameters()) == 8 * 64 + 64 * 512 + 512 * 128 + 128


def test_adm_conv_is_the_earlier_lighter_network():
    """model.arch=adm_conv keeps the engine's first network (conv resampling, two-conv encoder
    blocks): at FFHQ-128 the counts the old engine had (measured at commit 91b996b: denoiser
    93,876,355; encoder 43,363,712 with its 98,944-parameter part head)."""
    sets = ["model.arch=adm_conv", "model.denoiser.embed_channels=512"]
    sets += ["model.denoiser.head_channels=64", "model.encoder.head_channels=64"]
    with torch.device("meta"):
        model = build(load_config("ffhq.yaml", sets))
    den, enc = (sum(b) for b in blocks_of(model))
    part = sum(p.numel() for p in model.encoder.part_head.parameters())
    assert (den, enc + part, part) == (93_876_355, 43_363_712, 98_944)


def test_zero_init_output_and_conditioning_path(tiny_cfg):
    torch.manual_seed(0)
    unet = builders(tiny_cfg)[1]
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    assert unet(x, t, torch.randn(2, 16)).abs().max() == 0  # zero-initialised output conv
    torch.nn.init.normal_(unet.out_conv.weight)
    for m in unet.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.1)
    assert not torch.allclose(unet(x, t, torch.randn(2, 16)), unet(x, t, torch.randn(2, 16)))


def test_objective_terms_and_presets(tiny_cfg):
    torch.manual_seed(0)
    model = ArcDAE(tiny_cfg)
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    inp = model.draw_inputs(x0, torch.Generator().manual_seed(0))
    out = model(x0, inp)
    assert set(out) == set(model.terms())
    assert model.terms() == (
        "loss",
        "loss_diff",
        "loss_align",
        "loss_holo",
        "loss_part",
        "loss_jac",
    )
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    assert out["loss_holo"] > 0 and out["loss_part"] > 0 and out["loss_jac"] > 0
    o = tiny_cfg.method
    torch.testing.assert_close(
        out["loss"],
        out["loss_diff"] + o.lambda_align * out["loss_align"] + o.lambda_jac * out["loss_jac"],
    )
    raw = tiny_raw(tiny_cfg.data.root)
    raw["method"] = {"name": "diffae"}
    base = build(from_dict(raw))
    assert not hasattr(base, "teacher") and base.encoder.part_head is None
    out = base(x0, base.draw_inputs(x0, torch.Generator().manual_seed(0)))
    assert set(out) == set(base.terms()) == {"loss", "loss_diff"}  # no terms of zeros
    assert out["loss"] == out["loss_diff"]


def test_teacher_gets_no_gradient_and_tracks_student(tiny_cfg):
    torch.manual_seed(0)
    model = ArcDAE(tiny_cfg)
    assert all(not p.requires_grad for p in model.teacher.parameters())
    ema = frozen_copy(model.trainable())
    opt, sched = build_optimizer(model, 1e-2, (0.9, 0.999), 0.0, 0)
    step = EagerStep(model, ema, opt, sched, grad_clip=1.0, ema_decay=0.5)
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    before = [p.clone() for p in model.teacher.parameters()]
    step(x0, model.draw_inputs(x0, torch.Generator().manual_seed(0)), 0)
    m = tiny_cfg.method.teacher_momentum
    for b, t, s in zip(before, model.teacher.parameters(), model.encoder.parameters()):
        assert t.grad is None
        torch.testing.assert_close(t, m * b + (1 - m) * s)


def test_a_few_steps_reduce_the_loss(tiny_cfg):
    torch.manual_seed(0)
    model = ArcDAE(tiny_cfg)
    ema = frozen_copy(model.trainable())
    opt, sched = build_optimizer(model, 2e-3, (0.9, 0.999), 0.0, 0)
    step = EagerStep(model, ema, opt, sched, grad_clip=1.0, ema_decay=0.9)
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    inp = model.draw_inputs(x0, torch.Generator().manual_seed(0))  # one fixed batch
    losses = [float(step(x0, inp, k)["loss"]) for k in range(25)]
    assert losses[-1] < 0.8 * losses[0], losses
