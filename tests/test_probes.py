"""The converged probes against scikit-learn, the k-NN against brute force, TAD against an
independent implementation, the class-labelled datasets (IDX and CIFAR fixtures written
here), the classify suite through the CLI, a plug-in suite, and the fail-fast weight check."""

from __future__ import annotations

import gzip
import json
import pickle
import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import average_precision_score

from arcdae_fast.data.datasets import DataError
from arcdae_fast.data.layouts.cifar10 import cifar10
from arcdae_fast.data.layouts.fashion_mnist import fashion_mnist, read_idx
from arcdae_fast.eval import registry
from arcdae_fast.eval.cli import main as eval_main
from arcdae_fast.eval.probe import (
    C_GRID,
    ProbeSettings,
    attribute_probe,
    class_probe,
    diti_steps,
    knn_probe,
    logistic_fit,
    ridge_path,
)
from arcdae_fast.eval.tad import tad
from arcdae_fast.train import main as train_main

RNG = np.random.default_rng(1)


def codes(n=900, d=12, a=3):
    z = RNG.normal(size=(n, d)).astype(np.float32)
    w = RNG.normal(size=(d, a))
    y = (z @ w + 1.5 * RNG.normal(size=(n, a)) > 0.3).astype(np.float32)
    return z, y


def standardised(z):
    return ((z - z.mean(0)) / z.std(0)).astype(np.float32)


@pytest.mark.parametrize("c", [1e-2, 1.0])
def test_logistic_fit_is_sklearns_logistic_regression(c):
    z, y = codes()
    x = standardised(z)
    w, b, diag = logistic_fit(x, y[:, :1], c, multiclass=False)
    want = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, y[:, 0])
    p = torch.sigmoid(torch.from_numpy(x).double() @ w + b)[:, 0].numpy()
    assert np.abs(p - want.predict_proba(x)[:, 1]).max() < 2e-3
    assert diag["max_grad"] < 1e-4
    k = np.argmax(z[:, :4] + RNG.normal(size=(len(z), 4)), 1)
    w, b, _ = logistic_fit(x, k, c, multiclass=True)
    want = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, k)
    p = torch.softmax(torch.from_numpy(x).double() @ w + b, 1).numpy()
    assert np.abs(p - want.predict_proba(x)).max() < 2e-3


def test_attribute_probe_is_sklearns_with_c_picked_on_validation():
    z, y = codes()
    zs, ys = (z[:600], z[600:750], z[750:]), (y[:600], y[600:750], y[750:])
    r = attribute_probe(zs, ys, ["a", "b", "c"])
    mu, sd = zs[0].mean(0), zs[0].std(0)
    xs = [(a - mu) / sd for a in zs]
    for i, name in enumerate("abc"):  # per attribute: the C with the best validation AP
        best = max(
            C_GRID,
            key=lambda c: average_precision_score(
                ys[1][:, i],
                LogisticRegression(C=c, tol=1e-10, max_iter=10_000)
                .fit(xs[0], ys[0][:, i])
                .decision_function(xs[1]),
            ),
        )
        m = LogisticRegression(C=best, tol=1e-10, max_iter=10_000).fit(xs[0], ys[0][:, i])
        want = average_precision_score(ys[2][:, i], m.decision_function(xs[2]))
        assert r["per_attribute"][name] == pytest.approx(want, abs=0.01)
    assert r["protocol"] == "converged" and r["convergence"]["converged"]
    assert len(r["c_per_attribute"]) == 3


def test_ridge_path_is_sklearns_ridge():
    x = standardised(RNG.normal(size=(300, 8)))
    y = x @ RNG.normal(size=(8, 2)) + RNG.normal(size=(300, 2))
    y -= y.mean(0)
    for alpha, w in ridge_path(x, y, alphas=(0.1, 10.0, 1000.0)):
        want = Ridge(alpha=alpha, fit_intercept=False).fit(x, y).coef_.T
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)  # float32 codes


def test_class_probe_and_knn():
    n, d, k = 1200, 10, 4
    centres = RNG.normal(size=(k, d)) * 1.2
    labels = RNG.integers(0, k, n)
    z = (centres[labels] + RNG.normal(size=(n, d))).astype(np.float32)
    zs, ys = (z[:800], z[800:1000], z[1000:]), (labels[:800], labels[800:1000], labels[1000:])
    r = class_probe(zs, ys, k)
    mu, sd = zs[0].mean(0), zs[0].std(0)
    m = LogisticRegression(C=r["c"], tol=1e-10, max_iter=10_000).fit((zs[0] - mu) / sd, ys[0])
    assert r["top1"] == pytest.approx(m.score((zs[2] - mu) / sd, ys[2]), abs=0.006)
    assert r["top1"] > 0.6 and "top5" not in r and r["convergence"]["converged"]
    # k-NN: brute force, cosine similarity, exp(sim / T) votes of the k nearest
    a = zs[0] / np.linalg.norm(zs[0], axis=1, keepdims=True)
    b = zs[2] / np.linalg.norm(zs[2], axis=1, keepdims=True)
    sim = b @ a.T
    hits = 0
    for i in range(len(b)):
        near = np.argsort(-sim[i])[:20]
        votes = np.zeros(k)
        np.add.at(votes, ys[0][near], np.exp(sim[i, near] / 0.07))
        hits += votes.argmax() == ys[2][i]
    assert knn_probe(zs[0], ys[0], zs[2], ys[2], k) == pytest.approx(hits / len(b))
    # a label fraction trains on that share; more than 10 classes report top-5 too
    assert class_probe(zs, ys, k, ProbeSettings(label_fraction=0.1))["train_samples"] == 80
    many = (RNG.integers(0, 12, 800), RNG.integers(0, 12, 200), RNG.integers(0, 12, 200))
    assert 0 <= class_probe(zs, many, 12)["top5"] <= 1


def test_diti_budget_is_the_papers_optimizer_steps():
    # 15 epochs of CelebA's 162,770 training images in batches of 128, whatever the split
    assert diti_steps(ProbeSettings("diti")) == 19_075


def test_probe_of_large_code_sets_takes_seconds():
    z, y = RNG.normal(size=(20_000, 256)).astype(np.float32), None
    y = (z[:, :40] + RNG.normal(size=(20_000, 40)) > 0).astype(np.float32)
    t = time.perf_counter()
    r = attribute_probe(
        (z[:16000], z[16000:18000], z[18000:]),
        (y[:16000], y[16000:18000], y[18000:]),
        [str(i) for i in range(40)],
    )
    assert time.perf_counter() - t < 60 and r["mean_ap"] > 0.7


def auroc(score, label):
    """Mann-Whitney: P(score of a positive > score of a negative), ties count half."""
    pos, neg = score[label == 1], score[label == 0]
    greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return max(greater, 1 - greater)


def test_tad_is_infodiffusions_formula():
    n = 600
    y = (RNG.random((n, 3)) < [0.5, 0.4, 0.3]).astype(np.int64)
    z = RNG.normal(size=(n, 5))
    z[:, 0] += 3 * y[:, 0]
    z[:, 3] -= 2 * y[:, 1]
    z[:, 1] += 0.5 * y[:, 0]
    got = tad(z, y, ["a", "b", "c"])
    total, count = 0.0, 0
    for i in range(3):
        au = sorted(auroc(z[:, d], y[:, i]) for d in range(5))
        h = -sum(p * np.log(p) for p in (y[:, i].mean(), 1 - y[:, i].mean()))
        mi = []
        for j in range(3):
            if j == i:
                continue
            s = 0.0
            for u in (0, 1):
                for v in (0, 1):
                    pij = np.mean((y[:, i] == u) & (y[:, j] == v))
                    pi, pj = np.mean(y[:, i] == u), np.mean(y[:, j] == v)
                    s += pij * np.log(pij / (pi * pj)) if pij > 0 else 0.0
            mi.append(s / h)
        if au[-1] >= 0.75 and max(mi) <= 0.2:
            total, count = total + au[-1] - au[-2], count + 1
    assert got["attrs"] == count == 2 and got["tad"] == pytest.approx(total)
    shuffled = RNG.permutation(z)  # codes that carry nothing about the labels
    none = tad(shuffled, y, ["a", "b", "c"])
    assert none["attrs"] == 0 and none["tad"] == 0


# ---- class-labelled data ----------------------------------------------------------------------
def write_idx(path, arr, zipped=True):
    code = {np.uint8: 0x08}[arr.dtype.type]
    raw = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    raw += arr.tobytes()
    path.write_bytes(gzip.compress(raw) if zipped else raw)


@pytest.fixture
def fashion_root(tmp_path):
    root = tmp_path / "fmnist"
    root.mkdir()
    for part, n in (("train", 200), ("t10k", 60)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(labels):  # a class is a bright band at its own rows
            images[i, 2 * c : 2 * c + 6, 4:24] = 200 + RNG.integers(0, 50)
        write_idx(root / f"{part}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{part}-labels-idx1-ubyte", labels, zipped=part == "train")
    return root


def test_fashion_mnist_idx_files(fashion_root, tmp_path):
    ds = fashion_mnist(fashion_root, 32, "train")
    assert len(ds) == 180 and len(fashion_mnist(fashion_root, 32, "valid")) == 20
    assert len(fashion_mnist(fashion_root, 32, "test")) == 60
    item = ds[(3, True)]
    x = item["image"]
    assert x.shape == (3, 32, 32) and item["label"] == 3
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey replicated to RGB
    assert (x[:, :2] == -1).all() and (x[:, :, :2] == -1).all()  # the 2-pixel black border
    raw = read_idx(fashion_root / "train-images-idx3-ubyte.gz")
    want = torch.from_numpy(raw[3].astype(np.float32)).flip(-1) / 127.5 - 1
    assert torch.equal(x[0, 2:30, 2:30], want)  # padding changes no pixel
    assert fashion_mnist(fashion_root, 16, "test")[0]["image"].shape == (3, 16, 16)
    # a truncated file, a missing file, a missing folder: one line each
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + (5).to_bytes(4, "big") * 3)
    with pytest.raises(DataError, match="truncated"):
        read_idx(bad / "train-images-idx3-ubyte")
    (bad / "train-images-idx3-ubyte").unlink()
    write_idx(bad / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        fashion_mnist(bad, 32, "train")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(tmp_path / "nowhere", 32, "train")


class Marker:
    def __reduce__(self):
        return (open, ("/tmp/arcdae_cifar_marker", "w"))


def test_cifar10_batches_are_read_without_running_code(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, n in [(f"data_batch_{i}", 20) for i in range(1, 6)] + [("test_batch", 30)]:
        d = {
            b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in RNG.integers(0, 10, n)],
        }
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    tr = cifar10(tmp_path, 32, "train")
    assert len(tr) == 90 and len(cifar10(root, 32, "valid")) == 10
    te = cifar10(root, 32, "test")
    assert len(te) == 30 and te.class_names[0] == "airplane"
    raw = pickle.loads((root / "test_batch").read_bytes())
    want = torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32).astype(np.float32)) / 127.5 - 1
    assert torch.equal(te[0]["image"], want) and te[0]["label"] == raw[b"labels"][0]
    (root / "test_batch").write_bytes(pickle.dumps({b"data": Marker(), b"labels": []}))
    with pytest.raises(DataError, match="refused to load the global"):
        cifar10(root, 32, "test")
    assert not (tmp_path / "arcdae_cifar_marker").exists()
    import os

    assert not os.path.exists("/tmp/arcdae_cifar_marker")


def test_classify_suite_a_plugin_suite_and_fail_fast(
    fashion_root, tiny_config_file, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    data = ["data.dataset=fashion_mnist", f"data.root={fashion_root}", "data.resolution=16"]
    argv = ["--config", str(tiny_config_file), "--out", str(run), "--no-progress", *data]
    during = ["train.eval_every=2", "eval.during_training=[classify]", "eval.baselines=false"]
    during += ["eval.during_training_images=16"]
    assert train_main([*argv, "--max-steps", "2", "train.sample_every=0", *during]) == 0
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= [r for r in rows if "eval_classify_top1" in r][0]["eval_classify_knn"] <= 1
    ev = ["--run", str(run), "--no-progress", "eval.knn_k=5", "eval.baselines=true"]
    assert eval_main([*ev, "--suite", "classify"]) == 0
    r = json.loads((run / "eval" / "00000002" / "eval.json").read_text())["suites"]["classify"]
    assert r["classes"] == 10
    for who in ("code", "pixels", "random_init"):
        assert 0 <= r[who]["top1"] <= 1 and 0 <= r[who]["knn_top1"] <= 1
    assert r["pixels"]["dims"] == 3 * 16 * 16
    assert r["pixels"]["top1"] > 0.9  # the fixture's classes are bands at their own rows
    assert "classify: code linear top-1" in capsys.readouterr().out
    # a suite registered here runs through the CLI and reaches eval.json, report.md and --help
    seen = []

    @registry.register(
        "throwaway",
        "a test's suite",
        flat=lambda r: {"eval_n": r["n"]},
        report=lambda r, page: ["", f"{r['n']} codes counted"],
    )
    def throwaway(ev):
        seen.append(ev.split)
        return {"n": len(ev.codes(ev.split).z)}

    try:
        assert eval_main([*ev, "--suite", "throwaway", "--out", str(tmp_path / "e")]) == 0
        got = json.loads((tmp_path / "e" / "eval.json").read_text())["suites"]["throwaway"]
        assert seen == ["test"] and got["n"] == 60
        assert "throwaway: eval_n 60" in capsys.readouterr().out
        assert "## throwaway\n\n60 codes counted\n" in (tmp_path / "e" / "report.md").read_text()
    finally:
        registry.SUITES.pop("throwaway")
    # a missing weight file is said before any image is encoded (exit 3)
    from arcdae_fast.eval import context

    def no_encoding(*a, **k):
        raise AssertionError("encoded before saying the weights are missing")

    monkeypatch.setattr(context, "encode_split", no_encoding)
    monkeypatch.setenv("ARCDAE_FAST_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    assert eval_main([*ev, "--suite", "fid,classify", "eval.weights_dir=/nope"]) == 3
    assert "Inception" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["arcdae", "diffae", "dgae", "ddaepp", "dmz"])
def test_every_method_trains_on_one_channel(name, tiny_cfg):
    """data.channels=1: the networks take and give one channel (the augmentation runs on the
    replicated image); a step's loss is finite and reaches every trained parameter."""
    from arcdae_fast.config import from_dict
    from arcdae_fast.methods import build

    raw = tiny_cfg.to_dict()
    raw["data"]["channels"] = 1
    extra = {"downsample": 4, "lpips_weights": "random"} if name == "dgae" else {}
    raw["method"] = {"name": name, **extra}
    method = build(from_dict(raw))
    x0 = torch.rand(4, 1, 16, 16) * 2 - 1
    out = method(x0, method.draw_inputs(x0, torch.Generator().manual_seed(0)), **method.flags(0))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    den = method.trainable()["denoiser"]
    convs = [m for m in den.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[-1].out_channels == 1  # the denoiser predicts one channel
    assert all(p.grad is not None for p in den.parameters() if p.requires_grad)


def test_grey_images_as_one_channel(fashion_root, tiny_config_file, tmp_path):
    from arcdae_fast.config import load_config
    from arcdae_fast.data.loader import build_dataset
    from arcdae_fast.ops import sample_augment_params, timestep_augment

    grey, rgb = (fashion_mnist(fashion_root, 16, "train", c)[3]["image"] for c in (1, 3))
    assert grey.shape == (1, 16, 16) and torch.equal(rgb, grey.expand(3, -1, -1))
    # an RGB dataset cannot be served as one channel: one line naming both
    cfg = load_config(str(tiny_config_file), ["data.channels=1"])
    with pytest.raises(DataError, match="data.channels=1: data.dataset='synthetic' serves 3-ch"):
        build_dataset(cfg.data)
    # grey augmentation = the RGB augmentation of the replicated image (grey stays grey)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 16, 16, generator=g) * 2 - 1
    noise = torch.randn(6, 1, 16, 16, generator=g)
    params = sample_augment_params(torch.full((6,), 0.8), g)
    a, s = torch.full((6,), 0.9), torch.full((6,), 0.3)
    x_t, view = timestep_augment(x, params, a, s, noise, backend="reference")
    x_t3, view3 = timestep_augment(
        x.expand(-1, 3, -1, -1), params, a, s, noise.expand(-1, 3, -1, -1), backend="reference"
    )
    assert x_t.shape == (6, 1, 16, 16)
    assert (view3 - view3[:, :1]).abs().max() < 1e-5  # the three channels stay equal
    torch.testing.assert_close(view, view3[:, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(x_t, x_t3[:, :1], atol=1e-5, rtol=0)
    # the trainer, its grid and evaluation on one channel
    run = tmp_path / "grey"
    data = [f"data.root={fashion_root}", "data.dataset=fashion_mnist", "data.resolution=16"]
    argv = ["--config", str(tiny_config_file), "--out", str(run), "--no-progress", *data]
    assert train_main([*argv, "--max-steps", "2", "data.channels=1", "train.sample_every=2"]) == 0
    assert (run / "samples" / "recon_00000002.png").is_file()
    ev = ["--run", str(run), "--no-progress", "--suite", "classify", "eval.baselines=true"]
    assert eval_main(ev) == 0
    r = json.loads((run / "eval" / "00000002" / "eval.json").read_text())["suites"]["classify"]
    assert r["pixels"]["dims"] == 16 * 16  # one channel of pixels
