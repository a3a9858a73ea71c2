"""Data parallelism with 2 gloo processes on CPU (torchrun): DDP's replicas stay identical and
FSDP's shards are consistent, each run equals a single-process run on the same global batch,
runs resume exactly and across world sizes (.pt <-> sharded .dcp checkpoints), and a killed
rank makes the other exit instead of hanging (torchrun --max-restarts then resumes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from arcdae_fast import checkpoint, session
from arcdae_fast.train import main

WORKER = Path(__file__).with_name("ddp_worker.py")
SETS = [
    "model.denoiser.dropout=0",
    "train.precision=fp32",
    "train.sample_every=0",
    "train.log_every=1",
]


def torchrun(cfg_file, out, *extra, env=None, launcher=(), expect=0):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = subprocess.run(
        [*cmd, *launcher, str(WORKER), str(cfg_file), str(out), *SETS, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=None if env is None else {**os.environ, **env},
    )
    assert (r.returncode == 0) == (expect == 0), r.stdout[-2000:] + r.stderr[-4000:]
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


def test_grad_accum_uses_no_sync_under_ddp_and_fsdp(tiny_config_file, tmp_path):
    """train.grad_accum=2 under DDP (no_sync on the first micro-batch) and under FSDP
    (set_requires_gradient_sync) equals one process with grad_accum=2 and, for DiffAE (no
    batch-coupled term), one process without it."""
    runs = {}
    for name, extra in {
        "ddp_accum": ["train.parallel=ddp"],
        "fsdp_accum": ["train.parallel=fsdp"],
    }.items():
        runs[name] = tmp_path / name
        sets = ["method.name=diffae", "train.grad_accum=2", "train.max_steps=2"]
        torchrun(tiny_config_file, runs[name], *sets, "train.ckpt_every=2", *extra)
    w = torch.load(runs["ddp_accum"] / "rank0.pt")
    full = checkpoint.read_full(runs["fsdp_accum"] / "checkpoints" / "ckpt_00000002.dcp")
    for accum in (2, 1):
        single = tmp_path / f"single{accum}"
        argv = ["--config", str(tiny_config_file), "--out", str(single), "--no-progress", *SETS]
        sets = ["method.name=diffae", f"train.grad_accum={accum}"]
        assert main([*argv, *sets, "train.max_steps=2", "train.ckpt_every=2"]) == 0
        _, ref, _ = checkpoint.load_latest(single / "checkpoints")
        for k, v in ref["model"].items():
            assert rel_err(w[k], v) <= 1e-3, (accum, k)
            assert rel_err(full["model"][k], v) <= 1e-3, (accum, k)
        for run in runs.values():
            assert losses(run) == pytest.approx(losses(single), rel=1e-5)


def test_fsdp_equals_one_process_and_resumes_across_world_sizes(tiny_config_file, tmp_path):
    """FSDP on 2 ranks: consistent shards (rank 0's and rank 1's dim-0 halves make the
    checkpoint's tensors), equal to one process on the same global batch; a sharded .dcp
    checkpoint resumes in one process, and a one-process .pt resumes on 2 FSDP ranks, both
    continuing the straight run's loss curve (weights, EMA, AdamW state and LR schedule)."""
    straight, a, b = tmp_path / "straight", tmp_path / "a", tmp_path / "b"
    argv = ["--no-progress", "--config", str(tiny_config_file), *SETS, "train.ckpt_every=2"]
    assert main([*argv, "--out", str(straight), "train.max_steps=4"]) == 0
    torchrun(tiny_config_file, a, "train.parallel=fsdp", "train.max_steps=2", "train.ckpt_every=2")
    dcp_dir = a / "checkpoints" / "ckpt_00000002.dcp"
    assert dcp_dir.is_dir() and not (a / "checkpoints" / "ckpt_00000002.pt").exists()
    full = checkpoint.read_full(dcp_dir)
    r0, r1 = (torch.load(a / f"rank{r}.pt") for r in (0, 1))
    ref = torch.load(straight / "checkpoints" / "ckpt_00000002.pt", weights_only=False)
    for k, v in ref["model"].items():
        shards = torch.cat([r0[k], r1[k]]) if v.dim() else r0[k]
        assert torch.equal(shards, full["model"][k]), k  # dim-0 shards, in rank order
        assert rel_err(full["model"][k], v) <= 1e-3, (k, rel_err(full["model"][k], v))
    for k, v in ref["ema"].items():
        assert rel_err(full["ema"][k], v) <= 1e-3, k
    assert losses(a) == pytest.approx(losses(straight)[:2], rel=1e-5)
    # evaluation and inference load a sharded checkpoint in one process
    run = session.load_run(a)
    assert run.step == 2 and run.checkpoint == dcp_dir
    # 2 FSDP ranks -> 1 process
    assert main([*argv, "--out", str(a), "train.max_steps=4", "train.parallel=fsdp"]) == 0
    assert (a / "checkpoints" / "ckpt_00000004.pt").is_file()
    # 1 process -> 2 FSDP ranks
    assert main([*argv, "--out", str(b), "train.max_steps=2"]) == 0
    err = torchrun(
        tiny_config_file, b, "train.parallel=fsdp", "train.max_steps=4", "train.ckpt_every=2"
    )
    assert "resuming from" in err and "ckpt_00000002.pt" in err
    end = torch.load(straight / "checkpoints" / "ckpt_00000004.pt", weights_only=False)
    for run_dir in (a, b):
        assert losses(run_dir) == pytest.approx(losses(straight), rel=1e-5), run_dir
        _, got, path = checkpoint.load_latest(run_dir / "checkpoints")
        got = checkpoint.read_full(path)
        for k, v in end["model"].items():
            assert rel_err(got["model"][k], v) <= 2e-3, (run_dir, k)


def test_a_killed_rank_stops_the_other_and_max_restarts_resumes(tiny_config_file, tmp_path):
    """Rank 1 SIGKILLed right after the step-2 checkpoint: rank 0 exits non-zero within the
    timeout (no hang), the checkpoint is intact, and the same command resumes; with
    torchrun --max-restarts=1 the restarted ranks resume by themselves. Both land on the
    uninterrupted run's weights exactly. The restarted rank 1 comes up 5 s late: rank 0 then
    reaches the process group's rendezvous first, which failed (Gloo connect timeout) before
    distributed.attempt_store gave each attempt its own keys in torchrun's shared store."""
    sets = ["train.parallel=fsdp", "train.max_steps=4", "train.ckpt_every=2"]
    sets.append("train.dist_timeout_s=60")
    straight, killed, restarted = tmp_path / "straight", tmp_path / "killed", tmp_path / "rs"
    torchrun(tiny_config_file, straight, *sets)
    t0 = time.monotonic()
    torchrun(tiny_config_file, killed, *sets, env={"DIE_AT_STEP": "2"}, expect=1)
    assert time.monotonic() - t0 < 120
    step, state, _ = checkpoint.load_latest(killed / "checkpoints")
    assert step == 2 and "sharded_dir" in state
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]
    assert "resuming from" in torchrun(tiny_config_file, killed, *sets)
    err = torchrun(
        tiny_config_file,
        restarted,
        *sets,
        env={"DIE_AT_STEP": "2", "LATE_RESTART_S": "5"},
        launcher=["--max-restarts=1"],
    )
    assert "resuming from" in err and "ckpt_00000002.dcp" in err
    want = torch.load(straight / "rank0.pt")
    for run_dir in (killed, restarted):
        got = torch.load(run_dir / "rank0.pt")
        for k, v in want.items():
            assert torch.equal(got[k], v), (run_dir, k)
        assert losses(run_dir) == losses(straight)


def test_grad_accum_must_divide_the_rank_batch(tiny_config_file, tmp_path, capsys):
    argv = ["--config", str(tiny_config_file), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main([*argv, "train.grad_accum=3", "train.max_steps=1"]) == 2
    assert "train.grad_accum=3 does not divide" in capsys.readouterr().err


def test_a_rank_that_raises_is_named_by_the_other(tiny_config_file, tmp_path):
    """Rank 1 raises after its step-2 checkpoint call: rank 0's one-line error names rank 1
    and its error (left in the rendezvous store), not a network problem; the launcher exits
    non-zero and no process hangs."""
    sets = ["train.max_steps=6", "train.ckpt_every=2", "train.dist_timeout_s=30"]
    t0 = time.monotonic()
    err = torchrun(tiny_config_file, tmp_path / "r", *sets, env={"RAISE_AT_STEP": "2"}, expect=1)
    assert time.monotonic() - t0 < 120
    lines = [ln for ln in err.splitlines() if ln.startswith("error: rank 0:")]
    assert len(lines) == 1, err[-3000:]
    assert "rank 1 failed: RuntimeError: injected failure at step 2" in lines[0], lines[0]
    assert "lost its network" not in lines[0]


def guarded(body: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Runs `body` in a fresh interpreter whose work then ends with exit status 3 under the
    exit guard (1 s grace); returns the process and its wall time."""
    code = f"from arcdae_fast import distributed\n{body}distributed.exit_guard(3, 1.0)\n"
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    return r, time.monotonic() - t0


def test_a_process_that_a_thread_holds_after_its_run_is_ended():
    """The exit guard: a rank whose work is done but that something keeps alive (here a
    non-daemon thread) ends with its exit status after the grace period, saying why."""
    body = "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,)).start()\n"
    r, seconds = guarded(body, timeout=60)
    assert r.returncode == 3 and "forcing the exit" in r.stderr
    # what holds it, for a bug report: the thread (named by its target) and the main
    # thread's stack, waiting for it in threading's shutdown
    assert "Thread-1 (sleep)" in r.stderr and "in _shutdown" in r.stderr, r.stderr
    assert seconds < 30


def test_a_process_stuck_after_its_interpreter_finalized_is_ended_by_the_alarm():
    """Past the interpreter's finalization no Python thread runs, so the guard's thread cannot
    end the process; its alarm (SIGALRM's default action) does."""
    body = "import time\nclass Stuck:\n    def __del__(self):\n        time.sleep(1000)\n"
    r, seconds = guarded(body + "held = Stuck()\n", timeout=90)
    assert r.returncode == -signal.SIGALRM, (r.returncode, r.stderr[-2000:])
    assert seconds < 60


def test_finished_ddp_runs_exit_every_time(tiny_config_file, tmp_path):
    """A finished 2-rank run exits, run after run (one of two identical runs once hung at
    exit; the ranks now meet at a barrier before destroying the group, and an exit guard
    ends a rank that something still holds). REPEAT=10 in the environment runs it 10x."""
    repeat, walls = int(os.environ.get("REPEAT", "3")), []
    for i in range(repeat):
        t0 = time.monotonic()
        err = torchrun(tiny_config_file, tmp_path / f"r{i}", "train.max_steps=2")
        walls.append(time.monotonic() - t0)
        assert "done: 2 steps" in err, err[-2000:]
    # no run far slower than the others (a hang at exit would be 60 s: the exit guard)
    assert max(walls) <= 2 * sorted(walls)[len(walls) // 2] + 10, walls
