"""Loader processes end with the trainer, however it ends (SIGKILL by the OOM killer
included). The torch loader's workers start from a forkserver (data/loader.py), so nothing
ties their life to the trainer's: the forkserver is the trainer's child and the workers are
the forkserver's. Linux's parent-death signal chains them: the forkserver (through the
preload module below, imported when it starts) and every worker (`worker_init`) ask for
SIGKILL when their parent dies; multiprocessing's resource tracker then sees its last client
gone and exits by itself. Measured by tests/test_faults.py: no process of a SIGKILLed
trainer's group is left 10 s later."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (and at once if that happened already)."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not Linux-like: nothing to tie (the workers still end with a clean exit)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def worker_init(_worker_id: int) -> None:
    die_with_parent()


def context() -> multiprocessing.context.BaseContext:
    """The forkserver context, its server tied to this process."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["arcdae_fast.data.lifeline_server"])
    return ctx
