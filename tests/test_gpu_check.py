"""bench/gpu_check.sh --dry-run: every stage of the GPU check runs on CPU at tiny sizes (the
CUDA ones reported as skipped), at most 8 files come back, the summary holds every stage and
every method preset's step check, and every Triton kernel compiles for sm_90."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["env", "build", "triton-sm90", "cuda-tests", "steps", "agreement", "op-evidence"]
STAGES += ["bench-infonce"]
STAGES += ["bench-attn-pool", "bench-augment", "bench-adagn", "bench-step", "profile", "decode"]


@pytest.mark.timeout(900)
def test_dry_run_runs_every_stage(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=880,
    )
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert r.returncode == 0, r.stdout[-3000:] + log[-6000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files  # the device tool brings back 8 files at most
    s = json.loads((out / "summary.json").read_text())
    status = {st["stage"]: st["status"] for st in s["stages"]}
    assert list(status) == STAGES
    assert status["build"] == status["agreement"] == "skipped"  # CUDA only
    assert all(v == "ok" for k, v in status.items() if k not in ("build", "agreement")), status
    checks = {(c["preset"], c["check"]): c["ok"] for c in s["steps"]}
    presets = {"arcdae", "diffae", "ddaepp", "dgae", "dmz"}
    assert {p for p, c in checks if c == "fast-vs-eager-fp32"} == presets
    assert all(checks.values()), checks
    assert s["profile"]["ms_per_step"] > 0
    assert "| steps | ok |" in (out / "summary.md").read_text()
    # the triton-sm90 stage: every Triton kernel compiled to a Hopper cubin with the launchers'
    # tile configs, within shared memory (the interpreter accepts code the GPU compiler
    # rejects, and cannot see shared memory)
    lines = (out / "log.txt").read_text().splitlines()
    assert sum(line.startswith("ok  ") for line in lines) == 22, lines
    assert not [line for line in lines if line.startswith("FAIL")]


def test_a_failing_stage_does_not_stop_the_others(tmp_path):
    """--stages picks stages; a broken one is reported failed, the next still runs, the exit
    status is 1."""
    out = tmp_path / "out"
    cmd = ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out)]
    cmd += ["--stages", "bench-step,decode"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [not a mapping\n")
    env = {**os.environ, "GPU_CHECK_STEP_CONFIG": str(broken)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    s = json.loads((out / "summary.json").read_text())
    status = {st["stage"]: st["status"] for st in s["stages"]}
    assert status == {"bench-step": "failed", "decode": "ok"}, status
    assert r.returncode == 1
