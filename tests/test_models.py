import torch
from conftest import tiny_raw

from arcdae_fast.config import from_dict
from arcdae_fast.ema import frozen_copy
from arcdae_fast.methods import build
from arcdae_fast.methods.arcdae import ArcDAE
from arcdae_fast.models import build_denoiser, build_encoder
from arcdae_fast.step import ReferenceStep, build_optimizer


def builders(cfg):
    parts = (cfg.method.num_parts, cfg.method.part_key_dim, cfg.method.part_dim)
    enc = build_encoder(cfg.model.encoder, cfg.data.resolution, parts)
    return enc, build_denoiser(cfg.model.denoiser, cfg.data.resolution, cfg.model.encoder.z_dim)


def test_shapes(tiny_cfg):
    enc, unet = builders(tiny_cfg)
    x = torch.randn(3, 3, 16, 16)
    codes = enc(x)
    assert codes.holo.shape == (3, 16) and codes.part.shape == (3, 2, 8)
    assert enc(x, parts=False).part is None
    out = unet(x, torch.tensor([0, 500, 999]), codes.holo)
    assert out.shape == x.shape


def test_ffhq128_sizes_match_diffae():
    cfg = from_dict(
        {
            "data": {"dataset": "ffhq", "resolution": 128},
            "model": {
                "channel_mult": [1, 1, 2, 3, 4],
                "attn_resolutions": [16],
                "enc_channel_mult": [1, 1, 2, 3, 4, 4],
            },
        }
    )
    with torch.device("meta"):
        enc, unet = builders(cfg)
    n_unet = sum(p.numel() for p in unet.parameters())
    n_enc = sum(p.numel() for p in enc.parameters())
    # DiffAE's FFHQ-128 U-Net is ~1e8 parameters; the encoder feature map is 4x4x512.
    assert 8e7 < n_unet < 1.6e8, n_unet
    assert enc.channels == 512 and 2e7 < n_enc < 1e8, n_enc


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
    step = ReferenceStep(model, ema, opt, sched, grad_clip=1.0, ema_decay=0.5)
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
    step = ReferenceStep(model, ema, opt, sched, grad_clip=1.0, ema_decay=0.9)
    x0 = torch.rand(8, 3, 16, 16) * 2 - 1
    inp = model.draw_inputs(x0, torch.Generator().manual_seed(0))  # one fixed batch
    losses = [float(step(x0, inp, k)["loss"]) for k in range(25)]
    assert losses[-1] < 0.8 * losses[0], losses
