"""A run folder written by the engine before the method registry (commit 91b996b: old config
keys, format-1 checkpoint) resumes in this engine: its steps 3-4 give the losses the old
engine logged when it ran the same 4 steps straight. On the CPU that wrote the golden they are
equal bit for bit; on another CPU oneDNN's float32 kernels round differently (measured on an
Intel Xeon with AMX: the terms <= 4e-7 relative, grad_norm 1.2e-5 and ArcDAE's fd Jacobian
term 2.7e-4, a float32 difference divided by fd_eps = 1e-3), so the floats are compared at
those scales. The integers (steps, skipped images) and the learning rate are exact; a lost
state (optimizer moments, data position, RNG) moves loss_diff by far more than 2e-6.

tests/golden/legacy_run/ and legacy_straight_metrics.jsonl were written by that commit with
tests/golden/legacy_tiny.yaml (fp32, every op on its reference):
    python -m arcdae_fast.train --config legacy_tiny.yaml --out legacy_run --max-steps 2
    python -m arcdae_fast.train --config legacy_tiny.yaml --out straight --max-steps 4
"""

import json
import shutil
from pathlib import Path

from arcdae_fast.data.synthetic import generate
from arcdae_fast.legacy import upgrade_state
from arcdae_fast.train import main

GOLDEN = Path(__file__).with_name("golden")


def test_a_pre_methods_run_resumes_bit_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "reference")
    data = generate(tmp_path / "data", count=64, size=16)
    run = tmp_path / "run"
    shutil.copytree(GOLDEN / "legacy_run", run)
    cfg = tmp_path / "legacy.yaml"
    cfg.write_text((GOLDEN / "legacy_tiny.yaml").read_text().replace("DATA_ROOT", str(data)))
    argv = ["--config", str(cfg), "--out", str(run), "--no-progress", "--max-steps", "4"]
    assert main([*argv, "train.ckpt_every=2"]) == 0

    def losses(path):
        return [
            {
                k: v
                for k, v in json.loads(ln).items()
                if k != "img_per_s" and not k.startswith("ms_")
            }
            for ln in path.read_text().splitlines()
        ]

    got, want = losses(run / "metrics.jsonl"), losses(GOLDEN / "legacy_straight_metrics.jsonl")
    assert [g.keys() for g in got] == [w.keys() for w in want]
    tol = {"loss_jac": 1e-3, "grad_norm": 1e-4}
    for g, w in zip(got, want):
        for k, v in w.items():
            if isinstance(v, float) and k != "lr":
                assert abs(g[k] - v) <= tol.get(k, 2e-6) * abs(v), (g["step"], k, g[k], v)
            else:
                assert g[k] == v, (g["step"], k)


def test_upgrade_keeps_new_checkpoints_as_they_are():
    state = {"format": 2, "config": {"x": 1}}
    assert upgrade_state(state) is state
