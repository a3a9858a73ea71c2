"""The benchmark scripts run end to end (tiny shapes, eager providers) and append CSV rows
with the environment; the timing itself is a benchmark, not a test."""

import csv
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
    cmd += ["--variants", "reference-fp32", "--rounds", "1", "--steps", "1", "--warmup", "1"]
    r = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert row["provider"] == "reference-fp32" and row["metric"] == "img/s"
    assert float(row["value"]) > 0 and int(row["peak_mem_bytes"]) > 0
