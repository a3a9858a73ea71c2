"""DMZ (SPEC section 7): the Gaussian posterior (vector or spatial) with its KL to N(0, I),
the reparameterised conditioning by AdaGN or concatenation, sampling from the prior, the
config checks, the compiled step against the eager one, and the presets."""

from __future__ import annotations

import copy

import pytest
import torch

from arcdae_fast.config import ConfigError, from_dict, load_config
from arcdae_fast.losses import gaussian_kl
from arcdae_fast.methods import build
from arcdae_fast.methods.dmz import DMZ


def dmz_raw(root, **method) -> dict:
    from conftest import tiny_raw

    raw = tiny_raw(root)
    raw["model"]["denoiser"]["dropout"] = 0.0
    raw["method"] = {"name": "dmz", "beta": 0.01, **method}
    return raw


def spatial(root, **method) -> dict:
    raw = dmz_raw(root, latent="spatial", cond="concat", latent_channels=3, downsample=4)
    raw["model"]["encoder"]["channel_mult"] = [1, 2, 2]  # f = 4
    raw["method"].update(method)
    return raw


def images(n=4, side=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1


@pytest.mark.parametrize(
    "kind, cond, shape",
    [("vector", "adagn", (16,)), ("vector", "concat", (16,)), ("spatial", "concat", (3, 4, 4))],
)
def test_latents_conditioning_and_the_prior(synth_root, kind, cond, shape):
    raw = spatial(synth_root) if kind == "spatial" else dmz_raw(synth_root, cond=cond)
    torch.manual_seed(0)
    m = build(from_dict(raw))
    assert isinstance(m, DMZ) and m.latent_shape == shape
    in_ch = m.denoiser.down[0][0].in_channels
    assert in_ch == (3 if cond == "adagn" else 3 + shape[0])
    x0 = images()
    inputs = m.draw_inputs(x0, torch.Generator().manual_seed(0))
    assert inputs.latent_noise.shape == (4, *shape)
    out = m(x0, inputs)
    mean, logvar = m.posterior(x0)
    assert mean.shape == logvar.shape == (4, *shape)
    assert out["loss_kl"].item() == pytest.approx(gaussian_kl(mean, logvar).mean().item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(
        out["loss_diff"].item() + 0.01 * out["loss_kl"].item(), rel=1e-5
    )
    out["loss"].backward()
    assert all(p.grad is not None for p in m.encoder.parameters() if p.requires_grad)
    assert torch.equal(m.encode(x0), mean)
    z = m.sample_prior(3, torch.Generator().manual_seed(0))
    assert z.shape == (3, *shape)
    samples = m.decode(z, torch.randn(3, 3, 16, 16), steps=2)
    assert samples.shape == (3, 3, 16, 16) and torch.isfinite(samples).all()
    assert torch.isfinite(m.reconstruct(x0, steps=2)).all()


def test_the_reparameterised_sample_is_what_the_denoiser_sees(synth_root):
    """With sample_latent the conditioning varies with the latent noise; without it, not."""
    x0 = images()
    for sample, differs in ((True, True), (False, False)):
        torch.manual_seed(0)
        m = build(from_dict(dmz_raw(synth_root, sample_latent=sample)))
        for p in m.denoiser.parameters():  # zero-initialised layers re-drawn: z reaches the output
            if p.abs().max() == 0:
                p.data.normal_(std=0.05)
        a = m.draw_inputs(x0, torch.Generator().manual_seed(0))
        b = copy.copy(a)
        b.latent_noise = torch.randn_like(a.latent_noise)
        la, lb = m(x0, a)["loss_diff"], m(x0, b)["loss_diff"]
        assert (la.item() != lb.item()) == differs


def test_config_checks(synth_root):
    with pytest.raises(ConfigError, match="method.latent=spatial conditions by concatenation"):
        from_dict(spatial(synth_root, cond="adagn"))
    with pytest.raises(ConfigError, match=r"method.downsample=8 but model.encoder.channel_mult"):
        from_dict(spatial(synth_root, downsample=8))


@pytest.mark.timeout(900)  # Dynamo + AOTAutograd, no Inductor code generation
def test_compiled_step_matches_the_eager_step(synth_root):
    from conftest import compile_raw
    from test_step import check_compiled_step_matches_eager

    raw = compile_raw(synth_root)
    raw["method"] = {"name": "dmz", "beta": 0.01}
    check_compiled_step_matches_eager(from_dict(raw), DMZ, images(8), "aot_eager")


def test_presets_build():
    with torch.device("meta"):
        m = build(load_config("dmz.yaml"))
        q = build(load_config("dmz-quickstart.yaml"))
    assert m.latent_shape == (512,) and q.latent_shape == (128,)
    # the vector head gives mean and log-variance: DiffAE's encoder with a 2 x 512 head
    assert m.encoder.holo_head.out_features == 1024


def test_train_then_quality_against_decoding_steps(synth_root, tmp_path, capsys):
    """The steps suite on a DMZ run (codes and prior samples) and a DiffAE run (codes only):
    one row per step count, and the decodings approach the converged one as steps grow."""
    import json

    import yaml

    from arcdae_fast.eval.cli import main as eval_main
    from arcdae_fast.train import main

    for name, raw in (("dmz", dmz_raw(synth_root)), ("diffae", dmz_raw(synth_root))):
        if name == "diffae":
            raw["method"] = {"name": "diffae"}
        cfg_file = tmp_path / f"{name}.yaml"
        cfg_file.write_text(yaml.safe_dump(raw))
        run = tmp_path / name
        assert main(["--config", str(cfg_file), "--out", str(run), "--no-progress"]) == 0
        sets = ["eval.steps_grid=[1,3,8]", "eval.recon_steps=8", "eval.recon_images=8"]
        assert eval_main(["--run", str(run), "--suite", "steps", "--no-progress", *sets]) == 0
        assert "steps: 1: MSE" in capsys.readouterr().out
        (path,) = (run / "eval").glob("*/eval.json")
        r = json.loads(path.read_text())["suites"]["steps"]
        assert list(r["steps"]) == ["1", "3", "8"] and r["prior"] == (name == "dmz")
        rows = r["steps"]
        assert rows["8"]["mse_to_converged"] == 0.0  # 8 steps is the converged decoding
        assert rows["1"]["mse_to_converged"] > 0.0
        if name == "dmz":
            assert rows["8"]["prior_mse_to_converged"] == 0.0
            assert rows["1"]["prior_mse_to_converged"] > 0.0
            assert "sample FID not computed" in r["fid_note"]  # no Inception weights here
        assert (path.parent / "steps.png").is_file()


def test_domain_transfer_probe_on_shifted_colours(synth_root, tmp_path, capsys):
    import json

    import yaml

    from arcdae_fast.eval.cli import main as eval_main
    from arcdae_fast.train import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(dmz_raw(synth_root)))
    run = tmp_path / "run"
    assert main(["--config", str(cfg_file), "--out", str(run), "--no-progress"]) == 0
    argv = ["--run", str(run), "--suite", "transfer", "--no-progress", "eval.probe_epochs=2"]
    assert eval_main([*argv, "eval.transfer_shift=0.5"]) == 0
    assert "transfer: mean AP in domain" in capsys.readouterr().out
    (path,) = (run / "eval").glob("*/eval.json")
    r = json.loads(path.read_text())["suites"]["transfer"]
    assert "colours shifted by 0.5" in r["target"]
    assert 0 < r["in_domain_ap"] <= 1 and 0 < r["transfer_ap"] <= 1
    # with no shift the "other domain" is the test split itself: the same AP
    assert eval_main([*argv, "eval.transfer_shift=0"]) == 0
    r = json.loads(path.read_text())["suites"]["transfer"]
    assert r["transfer_ap"] == pytest.approx(r["in_domain_ap"])
    # another dataset must have the same attributes
    assert eval_main([*argv, "eval.transfer_dataset=folder", f"eval.transfer_root={tmp_path}"]) == 3
