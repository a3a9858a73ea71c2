"""DDAE++ (SPEC section 7): the self-conditioned U-Net (the code read from its own encoding
half, conditioning only its decoding half), the gradient routing and its stop-gradient
option, the EMA teacher's contrastive self-distillation, readouts at (layer, t), the config
checks, the compiled step against the eager one, and the presets."""

from __future__ import annotations

import pytest
import torch

from arcdae_fast.config import ConfigError, from_dict, load_config
from arcdae_fast.methods import build
from arcdae_fast.methods.ddaepp import DDAEPP
from arcdae_fast.models import UNet
from arcdae_fast.models.layers import ResBlock
from arcdae_fast.models.selfcond import SelfCondUNet


def ddaepp_raw(root, **method) -> dict:
    from conftest import tiny_raw

    raw = tiny_raw(root)
    raw["model"]["denoiser"]["dropout"] = 0.0
    raw["method"] = {"name": "ddaepp", "code_dim": 8, "pool_key_dim": 4, **method}
    return raw


def images(n=4, side=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1


def small_unet(cond_blocks="up"):
    return UNet(
        resolution=16,
        base_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        dropout=0.0,
        z_dim=6,
        embed_channels=16,
        max_groups=4,
        cond_blocks=cond_blocks,
    )


def test_the_code_modulates_the_decoding_half_only():
    unet = small_unet()
    for part, want in ((unet.down, False), ([unet.middle], False), (unet.up, True)):
        blocks = [m for s in part for m in s.modules() if isinstance(m, ResBlock)]
        assert blocks and all((b.zproj is not None) == want for b in blocks)
    full = small_unet("all")
    assert all(m.zproj is not None for m in full.modules() if isinstance(m, ResBlock))
    # the split forward is the forward
    x, t, z = images(2), torch.tensor([3, 700]), torch.randn(2, 6)
    emb = full.embed(t)
    h, skips, _ = full.down_pass(x, emb, torch.nn.functional.silu(z))
    assert torch.equal(full.up_pass(h, skips, emb, torch.nn.functional.silu(z)), full(x, t, z))
    assert unet.layer_names()[-1] == "middle" and unet.layer_channels["middle"] == 16
    with pytest.raises(ValueError, match="cond_blocks must be"):
        small_unet("middle")


@pytest.mark.parametrize("pool", ["mean", "attention"])
@pytest.mark.parametrize("layer", ["down.1", "down.2", "middle"])
def test_self_code_shapes_and_its_cheap_path(pool, layer):
    torch.manual_seed(0)
    net = SelfCondUNet(small_unet(), layer, 6, pool, key_dim=4)
    x, t = images(3), torch.tensor([0, 10, 999])
    pred, code = net(x, t)
    assert pred.shape == x.shape and code.shape == (3, 6)
    torch.testing.assert_close(net.code(x, t), code)  # the stopped pass reads the same code
    c = net.unet.layer_channels[layer]
    assert net.features(x, t, layer).shape == (3, c)
    with pytest.raises(ValueError, match="unknown U-Net layer 'down.9'"):
        SelfCondUNet(small_unet(), "down.9", 6)
    with pytest.raises(ValueError, match="cond_blocks='up'"):
        SelfCondUNet(small_unet("all"), layer, 6)


def test_gradients_reach_the_code_unless_stopped():
    torch.manual_seed(0)
    net = SelfCondUNet(small_unet(), "middle", 6)
    for p in net.parameters():  # zero-initialised output layers re-drawn: every path live
        if p.abs().max() == 0:
            p.data.normal_(std=0.1)
    x, t = images(3), torch.tensor([5, 50, 500])
    for stop in (False, True):
        net.zero_grad()
        pred, _ = net(x, t, stop_grad=stop)
        pred.square().mean().backward()
        head = net.head.proj.weight.grad
        assert (head is None) == stop, stop
        # the encoding half trains through the skips either way
        assert net.unet.down[1][0].in_conv.weight.grad.abs().max() > 0
    # with z given, the decoding half follows z, not x's own code
    z = torch.randn(3, 6)
    assert not torch.allclose(net.denoise(x, t, z), net.denoise(x, t))
    torch.testing.assert_close(net.denoise(x, t), net(x, t)[0])


def test_terms_teacher_and_readouts(synth_root):
    cfg = from_dict(ddaepp_raw(synth_root))
    torch.manual_seed(0)
    m = build(cfg)
    assert isinstance(m, DDAEPP) and m.terms() == ("loss", "loss_diff", "loss_align")
    x0 = images(4)
    inputs = m.draw_inputs(x0, torch.Generator().manual_seed(0))
    assert torch.equal(inputs.t_teacher, inputs.t)  # teacher_t = -1: the student's t
    out = m(x0, inputs)
    assert out["loss"].item() == pytest.approx(
        out["loss_diff"].item() + out["loss_align"].item(), rel=1e-6
    )
    out["loss"].backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert m.denoiser.head.proj.weight.grad.abs().max() > 0  # InfoNCE trains the head
    # readouts: the code, and every stage's mean features, at any t; deterministic
    for layer in m.readouts():
        z = m.encode(x0, t=20, layer=layer)
        want = 8 if layer == "code" else m.denoiser.unet.layer_channels[layer]
        assert z.shape == (4, want)
        assert torch.equal(z, m.encode(x0, t=20, layer=layer))
    assert not torch.equal(m.encode(x0, t=20), m.encode(x0, t=400))
    rec = m.reconstruct(x0, steps=2)
    assert rec.shape == x0.shape and torch.isfinite(rec).all()
    before = [p.clone() for p in m.teacher.parameters()]
    with torch.no_grad():
        for p in m.denoiser.parameters():
            p.add_(1.0)
    m.update_targets()  # EMA: teacher <- 0.999 teacher + 0.001 student
    moved = [(p - b).abs().max().item() for p, b in zip(m.teacher.parameters(), before)]
    assert max(moved) == pytest.approx(1e-3, rel=1e-3)
    # no teacher: self-conditioning alone
    alone = build(from_dict(ddaepp_raw(synth_root, lambda_align=0.0, teacher_t=7)))
    assert alone.teacher is None and alone.terms() == ("loss", "loss_diff")
    assert set(alone(x0, alone.draw_inputs(x0))) == {"loss", "loss_diff"}


def test_config_checks(synth_root):
    with pytest.raises(ConfigError, match=r"method.code_layer='down.7' is not a stage"):
        from_dict(ddaepp_raw(synth_root, code_layer="down.7"))
    with pytest.raises(ConfigError, match="method.encode_layer='up.0'"):
        from_dict(ddaepp_raw(synth_root, encode_layer="up.0"))
    with pytest.raises(ConfigError, match=r"method.teacher_t=1000 must be < diffusion.T=1000"):
        from_dict(ddaepp_raw(synth_root, teacher_t=1000))
    raw = ddaepp_raw(synth_root)  # no encoder: its section is not checked against the data
    raw["model"]["encoder"]["channel_mult"] = [1, 2, 2, 2, 2, 2]
    from_dict(raw)
    with pytest.raises(ConfigError, match="model.encoder.channel_mult"):
        from_dict({**raw, "method": {"name": "diffae"}})
    cfg = from_dict(ddaepp_raw(synth_root, code_layer="down.2", code_pool="attention"))
    m = build(cfg)  # layer_names(cfg) agrees with the network's own list
    assert m.readouts()[1:] == m.denoiser.unet.layer_names()


@pytest.mark.timeout(900)  # Dynamo + AOTAutograd, no Inductor code generation
def test_compiled_step_matches_the_eager_step(synth_root):
    from test_step import check_compiled_step_matches_eager

    raw = ddaepp_raw(synth_root, code_pool="attention")
    raw["model"]["denoiser"]["attn_resolutions"] = []  # conftest.compile_raw's reason
    check_compiled_step_matches_eager(from_dict(raw), DDAEPP, images(8), "aot_eager")


def test_presets_build_on_diffaes_64px_denoiser():
    """ddaepp.yaml: DiffAE's 64-px denoiser (71,518,723 parameters, ffhq64.yaml) less the
    code projections of its encoding half (the code modulates the decoding half only), plus
    the code head (one Linear, 512 -> 512)."""
    with torch.device("meta"):
        m = build(load_config("ddaepp.yaml"))
        diffae = build(load_config("ffhq64.yaml", ["method.name=diffae"]))
        build(load_config("ddaepp-quickstart.yaml"))
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert count(diffae.denoiser) == 71_518_723
    first = [*diffae.denoiser.down, diffae.denoiser.middle]
    zproj = sum(count(b.zproj) for s in first for b in s.modules() if isinstance(b, ResBlock))
    assert count(m.denoiser.unet) == 71_518_723 - zproj
    assert count(m.denoiser.head) == 512 * 512 + 512


def test_train_then_probe_over_a_layer_by_t_grid(synth_root, tmp_path, capsys):
    import json

    import yaml

    from arcdae_fast.eval.cli import main as eval_main
    from arcdae_fast.train import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(ddaepp_raw(synth_root)))
    run = tmp_path / "run"
    assert main(["--config", str(cfg_file), "--out", str(run), "--no-progress"]) == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_align"] > 0 and r["loss_diff"] > 0 for r in rows)
    grid = ["eval.probe_grid_t=[0,100]", "eval.probe_grid_layers=[code,middle]"]
    argv = ["--run", str(run), "--suite", "probe", "--no-progress", "eval.probe_epochs=2"]
    assert eval_main([*argv, *grid]) == 0
    assert "probe grid: best cell" in capsys.readouterr().out
    (result,) = (run / "eval").glob("*/eval.json")
    g = json.loads(result.read_text())["suites"]["probe"]["grid"]
    assert sorted(g["cells"]) == ["code@0", "code@100", "middle@0", "middle@100"]
    best = g["cells"][f"{g['best']['layer']}@{g['best']['t']}"]
    assert best["valid_mean_ap"] == max(c["valid_mean_ap"] for c in g["cells"].values())
    assert eval_main([*argv, "eval.probe_grid_t=[0]", "eval.probe_grid_layers=[up.0]"]) == 0
    g = json.loads(result.read_text())["suites"]["probe"]["grid"]
    assert "'up.0' is not one of" in g["skipped"]
