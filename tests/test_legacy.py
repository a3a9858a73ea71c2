"""A run folder written by the engine before the method registry (commit 91b996b: old config
keys, format-1 checkpoint) resumes in this engine bit-exactly: its steps 3-4 give the losses
the old engine logged when it ran the same 4 steps straight.

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
            {k: v for k, v in json.loads(ln).items() if k != "img_per_s"}
            for ln in path.read_text().splitlines()
        ]

    assert losses(run / "metrics.jsonl") == losses(GOLDEN / "legacy_straight_metrics.jsonl")


def test_upgrade_keeps_new_checkpoints_as_they_are():
    state = {"format": 2, "config": {"x": 1}}
    assert upgrade_state(state) is state
