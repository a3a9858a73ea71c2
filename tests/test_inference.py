"""Using a trained model: the latent DDIM trainer (resumable), the sample / reconstruct /
interpolate / manipulate commands and their API, the solvers through a method's decode, the
export (torch.export program and AOTInductor package equal eager) and the attention backend
choice."""

import json
import signal

import pytest
import torch
import yaml
from conftest import tiny_raw
from PIL import Image

from arcdae_fast import api, export, interpolate, manipulate, reconstruct, sample, train_latent
from arcdae_fast.nn import attention
from arcdae_fast.train import main as train_main

R = 16  # tiny_raw's resolution


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synth_root):
    root = tmp_path_factory.mktemp("infer")
    raw = tiny_raw(synth_root)
    raw["train"].update(max_steps=6, sample_every=0, ckpt_every=6)
    (root / "tiny.yaml").write_text(yaml.safe_dump(raw))
    out = root / "run"
    assert (
        train_main(["--config", str(root / "tiny.yaml"), "--out", str(out), "--no-progress"]) == 0
    )
    return out


LATENT = ["--hidden", "32", "--layers", "3", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def latent_file(run_dir):
    out = run_dir.parent / "latent"
    assert (
        train_latent.main(["--run", str(run_dir), "--out", str(out), "--steps", "6", *LATENT]) == 0
    )
    return out / "latent.pt"


def png(path):
    with Image.open(path) as im:
        return im.size


def test_train_latent_resumes_exactly_and_refuses_other_settings(run_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["--run", str(run_dir), *LATENT, "--ckpt-every", "2"]
    assert train_latent.main([*base, "--out", str(a), "--steps", "6"]) == 0
    assert train_latent.main([*base, "--out", str(b), "--steps", "4"]) == 0
    assert train_latent.main([*base, "--out", str(b), "--steps", "6"]) == 0  # continues
    assert "resuming from" in capsys.readouterr().err
    wa, wb = (torch.load(p / "latent.pt", weights_only=False)["weights"] for p in (a, b))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert train_latent.main([*base, "--out", str(b), "--steps", "6", "--hidden", "64"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_train_latent_stops_on_sigterm_with_a_checkpoint_and_resumes_exactly(
    run_dir, tmp_path, monkeypatch, capsys
):
    """The latent trainer runs on train's loop: a SIGTERM during step 3 finishes that step,
    saves it and exits 143; the same command resumes to the same weights as an unbroken run."""
    a, b = tmp_path / "a", tmp_path / "b"
    base = ["--run", str(run_dir), *LATENT, "--ckpt-every", "100", "--steps", "6"]
    assert train_latent.main([*base, "--out", str(a)]) == 0
    loss, calls = train_latent.LatentDDIM.loss, []

    def loss_then_signal(self, *args):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return loss(self, *args)

    monkeypatch.setattr(train_latent.LatentDDIM, "loss", loss_then_signal)
    assert train_latent.main([*base, "--out", str(b)]) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM at step 3" in capsys.readouterr().err
    assert sorted(p.name for p in (b / "checkpoints").glob("*.pt")) == ["ckpt_00000003.pt"]
    assert not (b / "latent.pt").exists()
    monkeypatch.setattr(train_latent.LatentDDIM, "loss", loss)
    assert train_latent.main([*base, "--out", str(b)]) == 0
    wa, wb = (torch.load(p / "latent.pt", weights_only=False)["weights"] for p in (a, b))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    steps = [json.loads(ln)["step"] for ln in (b / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_sample_command_writes_the_asked_images(run_dir, latent_file, tmp_path):
    out = tmp_path / "s"
    args = ["--run", str(run_dir), "--latent", str(latent_file), "--out", str(out)]
    args += ["--n", "5", "--per-row", "4"]
    assert sample.main([*args, "--steps", "3", "--latent-steps", "3", "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("sample_*.png")) == [
        f"sample_{i:04d}.png" for i in range(5)
    ]
    assert png(out / "sample_0000.png") == (R, R)
    assert png(out / "samples.png") == (4 * R, 2 * R)


def test_sample_without_a_latent_model_says_how_to_get_one(run_dir, tmp_path, capsys):
    assert sample.main(["--run", str(run_dir), "--out", str(tmp_path), "--no-progress"]) == 2
    assert "train_latent" in capsys.readouterr().err


def test_eval_fid_scores_unconditional_samples_of_the_latent_ddim(
    run_dir, latent_file, tmp_path, monkeypatch, capsys
):
    """`eval --suite fid` with a latent DDIM adds the generation FID: eval.fid_samples images
    (latent DDIM codes decoded from random x_T), against the split's reference statistics,
    seeded; a run without one says how to get one. The features are a fixed random projection
    of 4x4-pooled images (test_eval runs the pipeline with a random Inception; at 299 px on
    one CPU thread it would make this test minutes long)."""
    from arcdae_fast.eval import fid as fid_mod
    from arcdae_fast.eval.cli import main as eval_main

    proj = torch.randn(3 * (R // 4) ** 2, 16, generator=torch.Generator().manual_seed(0))
    feats = lambda x: torch.nn.functional.avg_pool2d(x.float(), 4).flatten(1) @ proj  # noqa: E731
    monkeypatch.setattr(fid_mod, "inception", lambda *a, **k: feats)
    base = ["--run", str(run_dir), "--suite", "fid", "--no-progress", "eval.recon_steps=2"]
    base += ["eval.batch_size=4", f"eval.cache_dir={tmp_path / 'cache'}"]
    got = []
    for k, seed in enumerate((0, 0, 1)):
        argv = [*base, "--latent", str(latent_file), "eval.fid_samples=6", f"eval.seed={seed}"]
        assert eval_main([*argv, "--out", str(tmp_path / f"e{k}")]) == 0
        got.append(json.loads((tmp_path / f"e{k}" / "eval.json").read_text()))
    f = got[0]["suites"]["fid"]
    assert f["samples"] == 6 and f["sample_codes"] == "latent DDIM"
    assert f["sample_fid"] > 0 and f["sample_fid"] != f["rfid_random"]
    assert got[0]["latent"] == str(latent_file)
    assert got[1]["suites"]["fid"]["sample_fid"] == f["sample_fid"]  # seeded: the same samples
    assert got[2]["suites"]["fid"]["sample_fid"] != f["sample_fid"]  # another seed, others
    assert "sample FID" in capsys.readouterr().out
    assert eval_main([*base, "--out", str(tmp_path / "none")]) == 0
    f = json.loads((tmp_path / "none" / "eval.json").read_text())["suites"]["fid"]
    assert "sample_fid" not in f and "train_latent" in f["sample_fid_note"]


def test_reconstruct_and_interpolate_commands(run_dir, tmp_path):
    out = tmp_path / "r"
    assert (
        reconstruct.main(
            ["--run", str(run_dir), "--out", str(out), "--n", "3", "--steps", "3", "--no-progress"]
        )
        == 0
    )
    assert png(out / "reconstruct.png") == (3 * R, 3 * R)
    mse = json.loads((out / "reconstruct.json").read_text())["mse"]
    assert len(mse["inverted"]) == len(mse["random"]) == 3
    assert (
        interpolate.main(
            [
                "--run",
                str(run_dir),
                "--out",
                str(out),
                "--index",
                "0",
                "1",
                "--n",
                "5",
                "--steps",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    assert png(out / "interpolate.png") == (7 * R, R)


def test_interpolation_ends_are_the_two_reconstructions(run_dir):
    m = api.load(run_dir, steps=3)
    x = m.images(2)
    strip = m.interpolate(x[0], x[1], n=3)
    torch.testing.assert_close(strip[[0, 2]], m.reconstruct(x), atol=1e-4, rtol=0)


def test_manipulate_moves_the_classifiers_logit_with_the_scale(run_dir, tmp_path, capsys):
    m = api.load(run_dir)
    name = m.attributes()[0]
    out = tmp_path / "m"
    scales = ["-1", "-0.5", "0", "0.5", "1"]
    assert (
        manipulate.main(
            [
                "--run",
                str(run_dir),
                "--out",
                str(out),
                "--attribute",
                name,
                "--n",
                "2",
                "--steps",
                "3",
                "--scales",
                *scales,
                "--no-progress",
            ]
        )
        == 0
    )
    assert png(out / f"manipulate_{name}.png") == (6 * R, 2 * R)
    rec = json.loads((out / f"manipulate_{name}.json").read_text())
    code = torch.tensor(rec["logit_of_edited_code"])  # (scales, images)
    assert (code.diff(dim=0) > 0).all()
    # the step is the same for every image: scale * sqrt(D) * |w| per unit of scale
    d = m.direction(name)
    step = 0.5 * (d.mean.numel() ** 0.5) * d.weight_norm
    torch.testing.assert_close(
        code.diff(dim=0), torch.full_like(code[1:], step), rtol=1e-4, atol=1e-4
    )
    assert (
        manipulate.main(
            ["--run", str(run_dir), "--out", str(out), "--attribute", "Nope", "--no-progress"]
        )
        == 2
    )
    assert "no attribute 'Nope'" in capsys.readouterr().err


def test_decode_with_each_solver(run_dir):
    m = api.load(run_dir, steps=4)
    z = m.encode(m.images(2))
    outs = {s: m.decode(z, solver=s) for s in ("ddim", "dpm++2m", "heun")}
    for s, x in outs.items():
        assert x.shape == (2, 3, R, R) and torch.isfinite(x).all(), s


@pytest.mark.timeout(1200)
def test_export_program_and_aoti_equal_eager(run_dir, tmp_path):
    """Both networks as torch.export programs; the denoiser (the decode's hot path) also as
    an AOTInductor package (about a minute of C++ compiling per network here, so the
    encoder's package is left to bench/bench_infer.py)."""
    out = tmp_path / "e"
    base = ["--run", str(run_dir), "--out", str(out), "--check"]
    assert export.main([*base, "--format", "program"]) == 0
    rows = json.loads((out / "export.json").read_text())["exports"]
    assert export.main([*base, "--format", "aoti", "--what", "denoiser"]) == 0
    rows += json.loads((out / "export.json").read_text())["exports"]
    assert {(r["what"], r["format"]) for r in rows} == {
        ("encoder", "program"),
        ("denoiser", "program"),
        ("denoiser", "aoti"),
    }
    for r in rows:
        assert r["max_abs_diff"] <= 1e-4, r
    # the dynamic batch: another batch size through both exports
    run = api.load(run_dir).run
    den, (x, t, z) = export.modules(run, 3)["denoiser"]
    with torch.no_grad():
        want = den(x, t, z)
        for fmt, name in (("program", "denoiser.pt2"), ("aoti", "denoiser.aoti.pt2")):
            got = export.load(fmt, out / name)(x, t, z)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_tensorrt_is_reported_unavailable_here_with_why(run_dir, tmp_path, capsys):
    why = export.unavailable("tensorrt", torch.device("cpu"))
    assert why and "CUDA" in why
    assert export.main(["--run", str(run_dir), "--out", str(tmp_path), "--format", "tensorrt"]) != 0
    assert "unavailable here" in capsys.readouterr().err


def test_attention_backend_choice_and_reasons(tiny_config_file, tmp_path, capsys):
    cpu = torch.device("cpu")
    assert attention.resolve("auto", cpu, torch.float32, 64) == "sdpa"
    assert attention.reasons("sdpa", cpu, torch.float32) == []
    fa = attention.reasons("flash_attn", cpu, torch.float32, 512)
    assert any("CUDA" in r for r in fa) and any("fp16/bf16" in r for r in fa)
    assert any("256" in r for r in fa)
    assert any("CUDA" in r for r in attention.reasons("xformers", cpu, torch.float32))
    with pytest.raises(RuntimeError, match="flash_attn cannot run here: .*CUDA"):
        attention.resolve("flash_attn", cpu, torch.float32, 64)
    with pytest.raises(ValueError, match="attn_backend must be one of"):
        attention.reasons("triton", cpu, torch.float32)
    # forced and unavailable: the run does not start, and says every reason
    argv = [
        "--config",
        str(tiny_config_file),
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
        "model.attn_backend=xformers",
    ]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert "model.attn_backend=xformers cannot run here" in err and "CUDA" in err
    attention.set_backend("auto")
    # the sdpa path is the attention the blocks computed before the choice existed
    q, k, v = torch.randn(3, 2, 2, 10, 8).unbind(0)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, -1) @ v
    torch.testing.assert_close(attention.attention(q, k, v), ref, atol=1e-5, rtol=1e-5)


def test_info_lists_attention_backends_and_export_formats():
    from arcdae_fast.info import report

    text = report()
    assert "attention (model.attn_backend" in text and "flash_attn" in text
    assert "tensorrt" in text and "unavailable" in text
