import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


def test_every_kernel_compiles_for_sm90_within_shared_memory():
    """The interpreter accepts code the GPU compiler rejects (and cannot see shared memory):
    compile each kernel to a Hopper cubin with the launchers' tile configs."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("compile_sm90.py"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok  ") == 22 and "FAIL" not in r.stdout, r.stdout
