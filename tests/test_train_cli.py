import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from arcdae_fast import checkpoint
from arcdae_fast.methods.arcdae import ArcDAE
from arcdae_fast.train import main

REQUIRED = {"step", "loss", "loss_diff", "loss_align", "loss_jac", "img_per_s"}


def run(cfg_file, out, *extra):
    return main(["--config", str(cfg_file), "--out", str(out), "--no-progress", *extra])


def cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "arcdae_fast.train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_smoke_run_writes_metrics_checkpoints_and_grids(tiny_config_file, tmp_path):
    out = tmp_path / "run"
    assert run(tiny_config_file, out) == 0
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(REQUIRED <= set(r) for r in rows)
    assert all(r["loss_align"] > 0 and r["loss_jac"] > 0 for r in rows)
    assert [s for s, _ in checkpoint.list_checkpoints(out / "checkpoints")] == [2, 4]
    assert (out / "samples" / "recon_00000004.png").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 4


def state_of(out):
    step, state, _ = checkpoint.load_latest(out / "checkpoints")
    return step, state


def assert_same_state(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            assert_same_state(x, y)
    else:
        assert a == b


def test_resume_is_bit_exact(tiny_config_file, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run(tiny_config_file, straight, "--max-steps", "6", "train.ckpt_every=3") == 0
    assert run(tiny_config_file, split, "--max-steps", "3", "train.ckpt_every=3") == 0
    assert run(tiny_config_file, split, "--max-steps", "6", "train.ckpt_every=3") == 0
    (sa, a), (sb, b) = state_of(straight), state_of(split)
    assert sa == sb == 6
    for key in ("model", "ema", "optimizer", "scheduler"):
        assert_same_state(a[key], b[key])
    la = (straight / "metrics.jsonl").read_text().splitlines()
    lb = (split / "metrics.jsonl").read_text().splitlines()

    def strip(rows):
        timing = ("img_per_s", "ms_")  # wall time: the only fields a resume may change
        return [{k: v for k, v in json.loads(r).items() if not k.startswith(timing)} for r in rows]

    assert strip(la) == strip(lb)


def test_resume_with_a_different_config_is_refused(tiny_config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(tiny_config_file, out, "--max-steps", "2") == 0
    assert run(tiny_config_file, out, "--max-steps", "3", "train.lr=0.5") == 2
    assert "differs in: train.lr" in capsys.readouterr().err


def test_config_errors_are_clean(tmp_path):
    r = cli("--config", "quickstart.yaml", "--out", str(tmp_path / "x"), "train.batchsize=3")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown key 'train.batchsize'; valid keys in 'train': batch_size" in r.stderr
    r = cli("--config", "quickstart.yaml", "--out", str(tmp_path / "x"), "train.lr=fast")
    assert r.returncode == 2 and "train.lr must be of type float, got 'fast'" in r.stderr


def test_missing_data_tells_how_to_get_ffhq(tmp_path, capsys):
    assert main(["--config", "ffhq.yaml", "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.root is not set" in err and "ffhq-dataset" in err
    assert (
        main(
            [
                "--config",
                "ffhq.yaml",
                "--out",
                str(tmp_path / "f"),
                "--no-progress",
                f"data.root={tmp_path / 'missing'}",
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_and_resumes(tiny_config_file, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arcdae_fast.train",
            "--config",
            str(tiny_config_file),
            "--out",
            str(out),
            "--no-progress",
            "--max-steps",
            "100000",
            "train.ckpt_every=100000",
            "train.sample_every=0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text()) > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    ckpts = checkpoint.list_checkpoints(out / "checkpoints")
    assert len(ckpts) == 1 and "stopped by SIGTERM" in err
    step = ckpts[0][0]
    assert step >= 1
    assert run(tiny_config_file, out, "--max-steps", str(step + 1)) == 0
    assert checkpoint.list_checkpoints(out / "checkpoints")[-1][0] == step + 1


def test_non_finite_loss_stops_and_keeps_the_checkpoint(
    tiny_config_file, tmp_path, capsys, monkeypatch
):
    forward = ArcDAE.forward

    calls = []

    def poisoned(self, x0, inp, jac=True):
        out = forward(self, x0, inp, jac)
        calls.append(1)
        if len(calls) == 3:  # the third step
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ArcDAE, "forward", poisoned)
    out = tmp_path / "run"
    assert run(tiny_config_file, out) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at step 2" in err and "ckpt_00000002.pt" in err
    ckpts = checkpoint.list_checkpoints(out / "checkpoints")
    assert [s for s, _ in ckpts] == [2]
    assert torch.load(ckpts[0][1], weights_only=False)["step"] == 2


def test_crash_during_save_leaves_old_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    checkpoint.save(folder, 1, {"w": torch.ones(3)})

    def exploding_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(folder, 2, {"w": torch.zeros(3)})
    assert sorted(os.listdir(folder)) == ["ckpt_00000001.pt"]
    monkeypatch.undo()
    step, state, _ = checkpoint.load_latest(folder)
    assert step == 1 and torch.equal(state["w"], torch.ones(3))


def test_unreadable_newest_checkpoint_falls_back(tmp_path):
    folder = tmp_path / "ck"
    checkpoint.save(folder, 1, {"w": torch.ones(1)})
    checkpoint.path_for(folder, 2).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cannot be read"):
        step, _, _ = checkpoint.load_latest(folder)
    assert step == 1


def _nan_at_step_3(monkeypatch):
    """The compiled step without its compile (the control flow is under test, not Inductor),
    going non-finite at step 3 as the bf16 compiled step did on an AMX CPU."""
    from arcdae_fast.step import CompiledStep, NonFiniteLoss

    monkeypatch.setattr(CompiledStep, "compile", lambda self, fwd: fwd)
    real = CompiledStep.__call__

    def call(self, x0, inputs, step):
        if step == 3:
            raise NonFiniteLoss("non-finite loss at step 3 (loss=nan)")
        return real(self, x0, inputs, step)

    monkeypatch.setattr(CompiledStep, "__call__", call)


def test_nonfinite_compiled_step_names_the_step_and_the_eager_command(
    tiny_config_file, tmp_path, capsys, monkeypatch
):
    _nan_at_step_3(monkeypatch)
    out = tmp_path / "run"
    args = ["--config", str(tiny_config_file), "--out", str(out), "--no-progress"]
    assert main([*args, "--max-steps", "6", "train.step=compiled", "train.precision=bf16"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at step 3 (loss=nan) in the compiled bf16 autocast step" in err
    assert "train.step=eager" in err and "ckpt_00000002.pt (step 2)" in err
    assert "lower train.lr" not in err


def test_on_nonfinite_eager_goes_on_from_the_last_checkpoint(
    tiny_config_file, tmp_path, capsys, monkeypatch
):
    _nan_at_step_3(monkeypatch)
    out = tmp_path / "run"
    args = ["--config", str(tiny_config_file), "--out", str(out), "--no-progress"]
    sets = ["train.step=compiled", "train.on_nonfinite=eager"]
    assert main([*args, "--max-steps", "6", *sets]) == 0
    err = capsys.readouterr().err
    assert "going on with the eager step from the last checkpoint" in err
    assert "resuming from" in err and "step: eager" in err
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["step"] == "eager"
