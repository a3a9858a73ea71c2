"""Data parallelism with 2 gloo processes on CPU (torchrun): the replicas stay identical, the
run equals a single-process run on the same global batch, and it resumes exactly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arcdae_fast import checkpoint
from arcdae_fast.train import main

WORKER = Path(__file__).with_name("ddp_worker.py")
SETS = [
    "model.denoiser.dropout=0",
    "train.precision=fp32",
    "train.sample_every=0",
    "train.log_every=1",
]


def torchrun(cfg_file, out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = subprocess.run(
        [*cmd, str(WORKER), str(cfg_file), str(out), *SETS, *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stderr


def losses(out):
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def test_two_ranks_equal_one_process_on_the_global_batch_and_resume(tiny_config_file, tmp_path):
    single, ddp, split = tmp_path / "single", tmp_path / "ddp", tmp_path / "split"
    argv = ["--config", str(tiny_config_file), "--out", str(single), "--no-progress"]
    assert main([*argv, *SETS, "train.max_steps=3", "train.ckpt_every=3"]) == 0
    err = torchrun(tiny_config_file, ddp, "train.max_steps=3", "train.ckpt_every=3")
    assert "x 2 ranks" in err and err.count("done: 3 steps") == 1  # rank 0 reports

    # both ranks hold identical weights, and rank 0 checkpointed them
    r0, r1 = (torch.load(ddp / f"rank{r}.pt") for r in (0, 1))
    step, state, _ = checkpoint.load_latest(ddp / "checkpoints")
    assert step == 3
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.equal(r0[k], state["model"][k]), k
    # ... equal to one process on the same global batch (float32 reduction order differs:
    # each rank's gradient is a mean over half the batch, then averaged)
    _, ref, _ = checkpoint.load_latest(single / "checkpoints")
    for k, v in ref["model"].items():
        assert rel_err(r0[k], v) <= 1e-3, (k, rel_err(r0[k], v))
    a, b = losses(ddp), losses(single)
    assert len(a) == len(b) == 3
    assert max(abs(x - y) / y for x, y in zip(a, b)) < 1e-5, (a, b)

    # resume: 2 steps, stop, then on to 3 lands on the straight run's weights exactly
    torchrun(tiny_config_file, split, "train.max_steps=2", "train.ckpt_every=2")
    err = torchrun(tiny_config_file, split, "train.max_steps=3", "train.ckpt_every=3")
    assert "resuming from" in err
    _, resumed, _ = checkpoint.load_latest(split / "checkpoints")
    for k, v in state["model"].items():
        assert torch.equal(resumed["model"][k], v), k
    assert losses(split) == a


def test_ddp_and_manual_all_reduce_agree_and_grad_accum_uses_no_sync(tiny_config_file, tmp_path):
    """train.parallel=manual (the flattened all-reduce after backward) gives the weights DDP
    gives; train.grad_accum=2 under DDP (no_sync on the first micro-batch) equals one process
    with grad_accum=2 and, for DiffAE (no batch-coupled term), one process without it."""
    runs = {}
    for name, extra in {
        "ddp": [],
        "manual": ["train.parallel=manual"],
        "ddp_accum": ["method.name=diffae", "train.grad_accum=2"],
    }.items():
        runs[name] = tmp_path / name
        torchrun(tiny_config_file, runs[name], "train.max_steps=2", "train.ckpt_every=2", *extra)
    w = {n: torch.load(runs[n] / "rank0.pt") for n in runs}
    for k, v in w["ddp"].items():
        assert rel_err(w["manual"][k], v) <= 1e-5, k
    assert losses(runs["ddp"]) == pytest.approx(losses(runs["manual"]), rel=1e-6)
    for accum in (2, 1):
        single = tmp_path / f"single{accum}"
        argv = ["--config", str(tiny_config_file), "--out", str(single), "--no-progress", *SETS]
        sets = ["method.name=diffae", f"train.grad_accum={accum}"]
        assert main([*argv, *sets, "train.max_steps=2", "train.ckpt_every=2"]) == 0
        _, ref, _ = checkpoint.load_latest(single / "checkpoints")
        for k, v in ref["model"].items():
            assert rel_err(w["ddp_accum"][k], v) <= 1e-3, (accum, k)
        assert losses(runs["ddp_accum"]) == pytest.approx(losses(single), rel=1e-5)


def test_grad_accum_must_divide_the_rank_batch(tiny_config_file, tmp_path, capsys):
    argv = ["--config", str(tiny_config_file), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*argv, "train.grad_accum=3", "train.max_steps=1"]) == 2
    assert "train.grad_accum=3 does not divide" in capsys.readouterr().err
