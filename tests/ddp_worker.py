"""Run by tests/test_distributed.py under torchrun: trains like `python -m arcdae_fast.train`,
then saves this rank's final weights to <out>/rank<R>.pt so the test can compare replicas
(FSDP: this rank's own shards, the local parts of its DTensors). DIE_AT_STEP makes a rank
die, RAISE_AT_STEP raise (see DyingTrainer).

usage: torchrun --nproc_per_node=2 tests/ddp_worker.py CONFIG OUT [section.key=value ...]
"""

import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from arcdae_fast import distributed, errors
from arcdae_fast.config import load_config
from arcdae_fast.train import Trainer

cfg_file, out, *overrides = sys.argv[1:]
rank = os.environ["RANK"]


class DyingTrainer(Trainer):
    """With DIE_AT_STEP=N, rank DIE_RANK (default 1) kills itself (SIGKILL, no cleanup) right
    after the step-N checkpoint call, on the first attempt only (torchrun restarts count)."""

    def save(self, step):
        path = super().save(step)
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first and step == int(os.environ.get("DIE_AT_STEP", -1)):
            if rank == os.environ.get("DIE_RANK", "1"):
                os.kill(os.getpid(), signal.SIGKILL)
        if step == int(os.environ.get("RAISE_AT_STEP", -1)) and rank == os.environ.get(
            "DIE_RANK", "1"
        ):
            raise RuntimeError(f"injected failure at step {step}")
        return path


# a restarted attempt's rank 1 comes up late, so rank 0 reaches the process group's
# rendezvous first: without distributed.attempt_store it reads the dead attempt's address
late = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0" and rank == "1"
if late and os.environ.get("LATE_RESTART_S"):
    time.sleep(float(os.environ["LATE_RESTART_S"]))
trainer = DyingTrainer(load_config(cfg_file, overrides), Path(out), progress=False)
code = errors.run(trainer.run)  # as python -m arcdae_fast.train: one-line errors


def local(v):
    return (v.to_local() if isinstance(v, DTensor) else v).detach().clone()


torch.save(
    {k: local(v) for k, v in trainer.s.method.state_dict().items()}, Path(out) / f"rank{rank}.pt"
)
distributed.exit_guard(code)  # as python -m arcdae_fast.train under torchrun
sys.exit(code)
