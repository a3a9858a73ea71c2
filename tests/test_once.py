"""Once-per-machine work under several processes starting at the same moment (the ranks of a
torchrun job before any process group exists): one process writes the bundled dataset, the
prepared dataset or the cached FID statistics, the others wait and read it; none fails."""

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from arcdae_fast.data import synthetic
from arcdae_fast.data.prepare import prepare
from arcdae_fast.eval.fid import Stats, reference_stats


def _generate(root, q):
    try:
        synthetic.generate(root, count=24, size=16)
        q.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the test
        q.put(f"{type(e).__name__}: {e}")


def _stats(cache, q):
    def compute():
        with open(os.path.join(cache, "computed"), "a") as f:
            f.write("x")
        time.sleep(0.5)
        s = Stats()
        s.add(torch.from_numpy(np.random.default_rng(0).normal(size=(16, 4))))
        return s

    try:
        mu, cov, cached = reference_stats(cache, "k", compute)
        q.put("cached" if cached else "computed")
    except Exception as e:  # noqa: BLE001
        q.put(f"{type(e).__name__}: {e}")


def _prepare(src, out, q):
    try:
        prepare(src, out, 8, workers=1, log=lambda *a: None)
        q.put("ok")
    except Exception as e:  # noqa: BLE001
        q.put(f"{type(e).__name__}: {e}")


def race(target, args, n):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, q)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return got


@pytest.mark.parametrize("ranks", [2, 3])
def test_bundled_data_written_once_by_concurrent_ranks(tmp_path, ranks):
    root = tmp_path / "data" / "synthetic_faces"
    assert race(_generate, (str(root),), ranks) == ["ok"] * ranks
    assert len(list((root / synthetic.IMAGE_DIR).iterdir())) == 24
    leftovers = [
        p.name for p in root.parent.iterdir() if p.name not in (root.name, f".{root.name}.lock")
    ]
    assert leftovers == []


def test_fid_statistics_computed_once(tmp_path):
    got = race(_stats, (str(tmp_path),), 3)
    assert sorted(got) == ["cached", "cached", "computed"]
    assert (tmp_path / "computed").read_text() == "x"


def test_prepared_dataset_by_concurrent_ranks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(src / f"{i}.png")
    out = tmp_path / "out"
    assert race(_prepare, (str(src), str(out)), 2) == ["ok", "ok"]
    assert len(list((out / "images").iterdir())) == 6
