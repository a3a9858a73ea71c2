"""The evaluation suite: metric math on known cases and against the libraries, the pipelines
with randomly initialised feature networks, the missing-weights errors, the CLI end to end
after a short training run, and evaluation during training (which must not disturb the
training's bit-exact resume)."""

import json

import numpy as np
import pytest
import torch
from conftest import random_inception
from scipy.stats import pearsonr
from skimage.metrics import structural_similarity
from sklearn.metrics import average_precision_score

from arcdae_fast import checkpoint
from arcdae_fast.data.datasets import DataError
from arcdae_fast.data.layouts.celebahq import celebahq_format
from arcdae_fast.data.layouts.lfw import lfw_format
from arcdae_fast.eval import fid as fid_mod
from arcdae_fast.eval.cli import main as eval_main
from arcdae_fast.eval.data import seeded_split
from arcdae_fast.eval.probe import ProbeSettings, attribute_probe, mean_ap, regression_probe
from arcdae_fast.eval.tad import tad
from arcdae_fast.nn.lpips import LPIPS
from arcdae_fast.nn.weights import WeightsError, WeightsFile, sha256
from arcdae_fast.train import main as train_main

RNG = np.random.default_rng(0)


def splits(z, y, n=(300, 100, 100)):
    a, b = n[0], n[0] + n[1]
    return (z[:a], z[a:b], z[b:]), (y[:a], y[a:b], y[b:])


def test_attribute_probe_finds_a_coded_attribute_and_not_noise():
    n, d = 500, 16
    y = (RNG.random((n, 3)) < np.array([0.3, 0.5, 0.2])).astype(np.float32) * 2 - 1  # -1/1
    z = RNG.normal(size=(n, d)).astype(np.float32)
    z[:, 0] += 4 * y[:, 0]  # attribute 0 is in dimension 0; 1 and 2 are not in the codes
    zs, ys = splits(z, y)
    # DiTi's Adam protocol (the converged default is checked against scikit-learn below)
    r = attribute_probe(zs, ys, ["a", "b", "c"], ProbeSettings("diti", epochs=15, lr=3e-2))
    ap = r["per_attribute"]
    assert ap["a"] > 0.97
    assert abs(ap["b"] - 0.5) < 0.15 and abs(ap["c"] - 0.2) < 0.15  # ~ the base rates
    assert r["mean_ap"] == pytest.approx(np.mean(list(ap.values())))
    assert 1 <= r["best_epoch"] <= 15
    # mean_ap is scikit-learn's AP, per attribute
    scores = RNG.normal(size=(100, 3))
    want = [average_precision_score(ys[2][:, i] > 0, scores[:, i]) for i in range(3)]
    assert mean_ap(ys[2] > 0, scores)[1] == pytest.approx(want)
    # the label fraction trains on fewer codes
    few = attribute_probe(zs, ys, ["a", "b", "c"], ProbeSettings(label_fraction=0.1))
    assert few["train_samples"] == 30


def test_regression_probe_recovers_linear_targets():
    rng = np.random.default_rng(5)  # its own: the module's RNG depends on the tests run before
    n = 500
    t = rng.normal(size=(n, 2)) * [3.0, 0.5] + [10, -2]
    z = np.concatenate([t @ rng.normal(size=(2, 6)), rng.normal(size=(n, 4))], 1)
    z = (z + 0.05 * rng.normal(size=z.shape)).astype(np.float32)
    zs, ys = splits(z, t)
    for protocol in ("converged", "diti"):
        # diti: epochs of CelebA's 162,770 codes (2 epochs: 2,544 Adam steps)
        r = regression_probe(zs, ys, ["u", "v"], ProbeSettings(protocol, epochs=2, lr=3e-2))
        assert r["mean_pearson_r"] > 0.99 and r["mean_mse"] < 0.05
    noise = regression_probe(
        splits(rng.normal(size=(n, 8)).astype(np.float32), t)[0], ys, ["u", "v"]
    )
    assert abs(noise["mean_pearson_r"]) < 0.3 and noise["mean_mse"] > 0.8
    a, b = rng.normal(size=50), rng.normal(size=50)
    from arcdae_fast.eval.probe import mean_pearson

    assert mean_pearson(a[:, None], b[:, None])[0] == pytest.approx(pearsonr(a, b).statistic)


def test_tad_on_codes_where_one_dimension_encodes_one_attribute():
    n = 2000
    y = (RNG.random((n, 3)) < 0.5).astype(np.int64)  # independent attributes
    z = RNG.normal(size=(n, 6))
    z[:, 2] = y[:, 0] + 0.01 * RNG.normal(size=n)  # attribute 0: a perfect detector
    z[:, 4] = -(y[:, 1] + 0.01 * RNG.normal(size=n))  # attribute 1: a perfect one, negated
    r = tad(z, y, ["a", "b", "c"])
    per = r["per_attribute"]
    assert per["a"]["best_dim"] == 2 and per["b"]["best_dim"] == 4
    assert per["a"]["best_auroc"] > 0.999 and per["b"]["best_auroc"] > 0.999
    assert not per["c"]["counted"] and per["a"]["counted"] and per["b"]["counted"]
    assert r["attrs"] == 2
    assert r["tad"] == pytest.approx(per["a"]["gap"] + per["b"]["gap"]) and 0.9 < r["tad"] < 1.0
    # an attribute that copies another shares all its information: not counted
    y2 = np.concatenate([y[:, :1], y[:, :1]], 1)
    z2 = np.stack([y[:, 0] + 0.01 * RNG.normal(size=n), RNG.normal(size=n)], 1)
    r2 = tad(z2, y2, ["a", "a2"])
    assert r2["attrs"] == 0 and r2["per_attribute"]["a"]["shared_information"] == pytest.approx(1)
    assert tad(z2, y2, ["a", "a2"], mi_threshold=1.0)["attrs"] == 2  # the filter off


def test_fid_math():
    x = torch.from_numpy(RNG.normal(size=(4000, 5)))
    st = fid_mod.Stats()
    for chunk in x.split(333):
        st.add(chunk)
    mu, cov = st.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.numpy(), rowvar=False), atol=1e-10)
    assert abs(fid_mod.fid(st, st)) < 1e-6  # a set with itself
    # two Gaussians, diagonal covariances: ||mu1 - mu2||^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
    m1, m2 = RNG.normal(size=5), RNG.normal(size=5)
    s1, s2 = RNG.uniform(0.5, 2, 5), RNG.uniform(0.5, 2, 5)
    want = ((m1 - m2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    got = fid_mod.frechet_distance(m1, np.diag(s1), m2, np.diag(s2))
    assert got == pytest.approx(want, rel=1e-9)
    # and full covariances against pytorch-fid's formula, scipy.linalg.sqrtm of S1 S2
    from scipy import linalg

    for d, n in ((5, 5), (64, 40)):  # (64, 40): singular covariances, fewer samples
        a, b = RNG.normal(size=(d, n)), RNG.normal(size=(d, n))
        c1, c2, m1, m2 = a @ a.T / n, b @ b.T / n, RNG.normal(size=d), RNG.normal(size=d)
        tr = np.trace(linalg.sqrtm(c1 @ c2).real)
        want = ((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * tr
        assert fid_mod.frechet_distance(m1, c1, m2, c2) == pytest.approx(want, rel=1e-6)


def test_reconstruction_metrics_are_the_librarys():
    from arcdae_fast.eval.context import Evaluator, Reconstructions
    from arcdae_fast.eval.suites.recon import recon

    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    ev = Evaluator.__new__(Evaluator)
    ev._recon = Reconstructions(x, {"inverted": x.clone(), "random": y}, 5)
    ev.cfg = type("C", (), {"eval": type("E", (), {"weights_dir": "/nonexistent"})()})()
    r = recon(ev)
    assert r["inverted"]["mse"] == 0 and r["inverted"]["ssim"] == pytest.approx(1.0)
    assert r["inverted"]["psnr"] == 100.0  # identical images
    a, b = ((x + 1) / 2).numpy(), ((y + 1) / 2).numpy()
    mse = ((a - b) ** 2).reshape(3, -1).mean(1)
    assert r["random"]["mse"] == pytest.approx(mse.mean(), rel=1e-6)
    assert r["random"]["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / mse)), rel=1e-5)
    ssim = [
        structural_similarity(
            p,
            q,
            data_range=1,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for p, q in zip(a, b)
    ]
    assert r["random"]["ssim"] == pytest.approx(np.mean(ssim))
    assert r["random"]["lpips"] is None and "alexnet-owt-7be5be79.pth" in r["lpips_note"]


def test_lpips_with_a_random_network():
    torch.manual_seed(0)
    net = LPIPS()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.all(net(x, x) == 0)
    d = net(x, y)
    assert d.shape == (2,) and torch.all(d > 0)
    torch.testing.assert_close(d, net(y, x))
    assert net(x, x + 0.01).mean() < d.mean()


def test_weights_are_found_verified_or_named(tmp_path, monkeypatch):
    monkeypatch.delenv("ARCDAE_FAST_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    f = tmp_path / "w" / "net.pth"
    f.parent.mkdir()
    torch.save({"a": torch.ones(2)}, f)
    good = WeightsFile("net.pth", sha256(f)[:8], "https://example.org/net.pth", "the test net")
    assert good.find(str(tmp_path / "w")) == f
    monkeypatch.setenv("ARCDAE_FAST_WEIGHTS", str(tmp_path / "w"))
    assert good.find() == f  # from the environment variable
    bad = WeightsFile("net.pth", "00000000", "https://example.org/net.pth", "the test net")
    with pytest.raises(WeightsError, match="is not the test net: its sha256 is"):
        bad.find()
    gone = WeightsFile("other.pth", "00000000", "https://example.org/o.pth", "the other net")
    with pytest.raises(WeightsError, match=r"needs the file other.pth .*https://example.org/o.pth"):
        gone.find()


def test_fid_pipeline_with_a_random_inception(monkeypatch, tmp_path):
    feats = fid_mod.features_of(random_inception(monkeypatch))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    f = feats(x)
    assert f.shape == (4, 2048) and torch.isfinite(f).all()
    a, b = fid_mod.stats_of([x], feats), fid_mod.stats_of([x.flip(-1) * 0.5], feats)
    assert fid_mod.fid(a, b) > 0
    calls = []

    def compute():
        calls.append(1)
        return a

    first = fid_mod.reference_stats(tmp_path, "k", compute)
    again = fid_mod.reference_stats(tmp_path, "k", compute)
    assert calls == [1] and not first[2] and again[2]  # computed once, then from the cache
    np.testing.assert_array_equal(first[1], again[1])


def test_celebahq_and_lfw_layouts(tmp_path):
    from PIL import Image

    hq = tmp_path / "hq"
    (hq / "CelebA-HQ-img").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(hq / "CelebA-HQ-img" / f"{i}.jpg")
    (hq / "CelebAMask-HQ-attribute-anno.txt").write_text(
        "3\nSmiling Male\n0.jpg 1 -1\n1.jpg -1 -1\n2.jpg 1 1\n"
    )
    ds = celebahq_format(hq, 16)
    assert (
        len(ds) == 3 and ds.attr_names == ["Smiling", "Male"] and ds[2]["attrs"].tolist() == [1, 1]
    )
    lfw = tmp_path / "lfw"
    for name in ("Ann_Bee", "Cy_Dee"):
        (lfw / "lfw" / name).mkdir(parents=True)
        Image.new("RGB", (24, 24)).save(lfw / "lfw" / name / f"{name}_0001.jpg")
    (lfw / "lfw_attributes.txt").write_text(
        "# generated\n#\tperson\timagenum\tMale\tAsian\nAnn Bee\t1\t0.5\t-1.25\nCy Dee\t1\t-2\t3\n"
    )
    ds = lfw_format(lfw, 16)
    assert ds.factor_names == ["Male", "Asian"] and ds[0]["factors"].tolist() == [0.5, -1.25]
    (lfw / "lfw" / "Cy_Dee" / "Cy_Dee_0001.jpg").unlink()
    with pytest.raises(DataError, match="1 image.s. of lfw_attributes.txt are missing"):
        lfw_format(lfw, 16)
    with pytest.raises(DataError, match="CelebAMask-HQ"):
        celebahq_format(tmp_path / "nothing", 16)
    parts = [seeded_split(100, s, 3) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [80, 10, 10]
    assert len(np.unique(np.concatenate(parts))) == 100  # disjoint, covering
    assert np.array_equal(parts[2], seeded_split(100, "test", 3))  # the same every time


def test_eval_cli_after_a_short_training_run(tiny_config_file, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    argv = ["--config", str(tiny_config_file), "--out", str(run), "--no-progress"]
    assert train_main([*argv, "--max-steps", "4", "train.sample_every=0"]) == 0
    capsys.readouterr()
    code = eval_main(
        ["--run", str(run), "--suite", "probe,regress,tad,recon", "--no-progress"]
        + ["eval.recon_steps=3", "eval.probe_epochs=3"]
    )
    assert code == 0
    out = run / "eval" / "00000004"
    r = json.loads((out / "eval.json").read_text())
    assert r["step"] == 4 and r["method"] == "arcdae" and r["split"] == "test"
    s = r["suites"]
    assert np.isfinite(s["probe"]["mean_ap"]) and np.isfinite(s["regress"]["mean_pearson_r"])
    assert np.isfinite(s["tad"]["tad"]) and s["tad"]["attrs"] >= 0
    for start in ("inverted", "random"):
        assert np.isfinite(s["recon"][start]["mse"]) and 0 < s["recon"][start]["ssim"] <= 1
    assert "LPIPS needs images of at least 32 px" in s["recon"]["lpips_note"]
    assert r["settings"]["recon_steps"] == 3 and r["data"]["images"]["test"] > 0
    for f in ("report.md", "ap.png", "tad.png", "recon.png"):
        assert (out / f).is_file(), f
    assert "mean AP" in capsys.readouterr().out
    # rFID with a random Inception, the reference statistics cached for the next time
    feats = fid_mod.features_of(random_inception(monkeypatch))
    monkeypatch.setattr(fid_mod, "inception", lambda *a, **k: feats)
    fid_argv = ["--run", str(run), "--suite", "fid", "--no-progress", "eval.recon_steps=2"]
    fid_argv += [f"eval.cache_dir={tmp_path / 'cache'}"]
    assert eval_main(fid_argv) == 0
    f = json.loads((out / "eval.json").read_text())["suites"]["fid"]
    assert np.isfinite(f["rfid_inverted"]) and not f["reference_cached"]
    assert len(list((tmp_path / "cache").glob("fid_ref_*.npz"))) == 1
    monkeypatch.undo()
    # an explicitly asked-for suite that cannot run: exit 3, one line naming the file
    assert (
        eval_main(["--run", str(run), "--suite", "fid", "--no-progress", "eval.weights_dir=/nope"])
        == 3
    )
    assert "weights-inception-2015-12-05-6726825d.pth" in capsys.readouterr().err
    # bad input: one line, exit 2
    assert eval_main(["--run", str(tmp_path / "empty")]) == 2
    assert "has no checkpoints" in capsys.readouterr().err
    assert eval_main(["--run", str(run), "model.encoder.z_dim=4"]) == 2
    assert "would change the trained network" in capsys.readouterr().err


def test_evaluation_during_training_leaves_the_training_as_it_was(tiny_config_file, tmp_path):
    sets = ["--max-steps", "4", "train.sample_every=0", "train.ckpt_every=2"]
    base = ["--config", str(tiny_config_file), "--no-progress"]
    plain, evald = tmp_path / "plain", tmp_path / "eval"
    assert train_main([*base, "--out", str(plain), *sets]) == 0
    ev = [
        "train.eval_every=2",
        "eval.during_training_images=16",
        "eval.during_training_recon_steps=2",
    ]
    ev += ["eval.probe_epochs=2", "eval.during_training=[probe,recon]"]
    assert train_main([*base, "--out", str(evald), *sets, *ev]) == 0
    rows = [json.loads(ln) for ln in (evald / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_probe_ap" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(np.isfinite(r["eval_recon_mse_inverted"]) for r in evals)
    (_, a, _), (_, b, _) = (checkpoint.load_latest(p / "checkpoints") for p in (plain, evald))
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k  # the training did not notice
    losses = lambda p: [  # noqa: E731
        json.loads(ln)["loss"]
        for ln in (p / "metrics.jsonl").read_text().splitlines()
        if "loss" in ln
    ]
    assert losses(plain) == losses(evald)
