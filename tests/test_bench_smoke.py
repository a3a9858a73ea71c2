"""The benchmark scripts run end to end (tiny shapes, eager providers) and append CSV rows
with the environment; the timing itself is a benchmark, not a test."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize(
    "script,provider",
    [
        ("bench_infonce.py", "naive-eager"),
        ("bench_attn_pool.py", "sdpa"),
        ("bench_augment.py", "reference-eager"),
    ],
)
def test_bench_script_runs_and_writes_csv(tmp_path, script, provider):
    out = tmp_path / "r.csv"
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH / script),
            "--device",
            "cpu",
            "--quick",
            "--providers",
            provider,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows and all(row["provider"] == provider and float(row["median_ms"]) > 0 for row in rows)
    assert {"device", "torch", "triton", "commit"} <= set(rows[0])


def test_bench_step_runs_and_writes_csv(tmp_path, tiny_config_file):
    out = tmp_path / "s.csv"
    cmd = [sys.executable, str(BENCH / "bench_step.py"), "--config", str(tiny_config_file)]
    cmd += ["--variants", "eager-fp32", "--rounds", "1", "--steps", "1", "--warmup", "1"]
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert row["provider"] == "eager-fp32" and row["metric"] == "img/s"
    assert float(row["value"]) > 0 and int(row["peak_mem_bytes"]) > 0


def test_method_table_runs_trains_evaluates_and_resumes(tmp_path):
    """bench/method_table.py end to end on a Fashion-MNIST-layout fixture (IDX files written
    here): one method, one seed, a few steps; a second call reuses the finished run."""
    import numpy as np
    from test_probes import write_idx

    root = tmp_path / "fm"
    root.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", 120), ("t10k", 40)):
        write_idx(
            root / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28), np.uint8)
        )
        write_idx(root / f"{part}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    cmd = [sys.executable, str(BENCH / "method_table.py"), "--methods", "arcdae", "--seeds", "1"]
    cmd += ["--steps", "2", "--batch", "8", "--eval-every", "1", "--during-images", "16"]
    cmd += ["--eval-images", "40", "--recon-images", "4", "--root", str(root)]
    cmd += ["--runs", str(tmp_path / "runs")]
    cmd += ["--results", str(tmp_path / "res")]
    for _ in range(2):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    md = (tmp_path / "res" / "method_table_fashion_mnist.md").read_text()
    assert "| arcdae |" in md and (tmp_path / "res" / "method_table_fashion_mnist.png").is_file()
    (rec,) = json.loads((tmp_path / "res" / "method_table_fashion_mnist.json").read_text())
    assert rec["images_seen"] == 16 and len(rec["curve"]) == 2


def test_op_evidence_measures_and_finds_the_crossover(tmp_path):
    """bench/op_evidence.py at two shapes per op (not recorded here); and its crossover rule:
    the smallest size from which every larger measured size ran >= MIN_SPEEDUP x."""
    sys.path.insert(0, str(BENCH))
    from op_evidence import min_size

    def rows(*pairs):
        return [{"size": s, "speedup": v} for s, v in pairs]

    assert min_size(rows((10, 0.8), (100, 1.3), (1000, 1.5))) == 100
    assert min_size(rows((10, 1.3), (100, 0.9), (1000, 1.5))) == 1000  # a dip: above it only
    assert min_size(rows((10, 1.3), (1000, 1.0))) is None  # loses at the largest: nowhere
    assert min_size(rows((10, 1.3), (10, 1.0), (100, 1.2))) == 100  # same size: the worse
    cmd = [sys.executable, str(BENCH / "op_evidence.py"), "--quick", "--rounds", "1"]
    cmd += ["--min-time", "0.01", "--dtypes", "float32", "--ops", "adagn,augment"]
    r = subprocess.run([*cmd, "--results", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (md,) = tmp_path.glob("op_evidence_cpu-*.md")
    text = md.read_text()
    if "| adagn | cpp | float32 |" not in text:
        pytest.skip("the C++ extension is not built")
    assert "| augment | cpp | float32 |" in text and "auto picks it" in text
