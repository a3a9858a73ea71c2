"""Run by tests/test_distributed.py under torchrun: trains like `python -m arcdae_fast.train`,
then saves this rank's final weights to <out>/rank<R>.pt so the test can compare replicas.

usage: torchrun --nproc_per_node=2 tests/ddp_worker.py CONFIG OUT [section.key=value ...]
"""

import os
import sys
from pathlib import Path

import torch

from arcdae_fast.config import load_config
from arcdae_fast.train import Trainer

cfg_file, out, *overrides = sys.argv[1:]
trainer = Trainer(load_config(cfg_file, overrides), Path(out), progress=False)
code = trainer.run()
torch.save(
    {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
    Path(out) / f"rank{os.environ['RANK']}.pt",
)
sys.exit(code)
