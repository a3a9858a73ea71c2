"""Imported by the forkserver when it starts (data/lifeline.py): it dies with the trainer.
Imported anywhere else (the forkserver runs as `python -c ...forkserver main...`), nothing."""

import sys

from .lifeline import die_with_parent

if sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules:
    die_with_parent()
