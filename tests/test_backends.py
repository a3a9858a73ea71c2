import json

import pytest
import torch

from arcdae_fast import evidence, kernels
from arcdae_fast.info import report
from arcdae_fast.ops import _backends, _triton, snr_weighted_infonce

CPU = torch.device("cpu")


@pytest.fixture
def cpp_measured(tmp_path, monkeypatch):
    """An evidence record (arcdae_fast/evidence.json's format) saying that on this machine's
    device class the cpp AdaGN beats the reference in float32 from work size 100,000."""
    rows = [{"size": s, "speedup": v} for s, v in ((10**4, 0.8), (10**5, 1.3), (10**6, 1.5))]
    rec = {"min_size": 100_000, "rows": rows, "device": "a test's", "date": "today"}
    path = tmp_path / "evidence.json"
    ops = {"ops": {"adagn": {"cpp": {"float32": rec}}}}
    path.write_text(json.dumps({evidence.device_class(CPU): ops}))
    monkeypatch.setattr(evidence, "PATH", path)
    evidence.forget()
    yield
    evidence.forget()


def test_auto_picks_the_highest_priority_available_backend():
    assert {"infonce", "attn_pool", "augment", "adagn"} <= set(_backends.ops())
    for op in _backends.ops():
        for size in (0, 10**12):  # below / above every measured crossover
            usable = {
                n: b.priority["cpu"]
                for n, b in _backends.backends(op).items()
                if b.priority.get("cpu", -1) >= 0
                and not b.reasons(CPU, torch.float32)
                and 0 <= _backends.auto_min_size(op, n, "cpu", torch.float32) <= size
            }
            best = max(usable, key=usable.get)
            assert _backends.resolve(op, "auto", CPU, torch.float32, size).name == best
        assert _backends.resolve(op, "auto", CPU, torch.float64).name == "reference"


def test_auto_picks_a_fused_backend_only_where_it_was_measured_to_win(cpp_measured):
    from arcdae_fast.ops import _ext

    if _ext.load_error():
        pytest.skip("the C++ extension is not built")
    assert _backends.resolve("adagn", "auto", CPU, torch.float32, 10**3).name == "reference"
    assert _backends.resolve("adagn", "auto", CPU, torch.float32, 10**7).name == "cpp"
    # not measured: bfloat16 here, attn_pool at any size
    assert _backends.resolve("adagn", "auto", CPU, torch.bfloat16, 10**7).name == "reference"
    assert _backends.resolve("attn_pool", "auto", CPU, torch.float32, 10**9).name == "reference"
    text = report()
    assert "cpp: 1.50x the reference at work size 1,000,000 (a test's, today): auto from " in text
    assert "cpu: auto -> reference below the measured crossover, cpp above (float32" in text
    assert "not measured on " in text and "python bench/op_evidence.py --record" in text
    assert _backends.resolve("adagn", "cpp", CPU, torch.float32, 10).name == "cpp"  # forced


def test_forced_backend_that_cannot_run_lists_reasons():
    with pytest.raises(
        RuntimeError,
        match=r"backend 'triton' \(from argument 'backend'\) "
        r"cannot run on cpu/float64: dtype float64",
    ):
        _backends.resolve("infonce", "triton", CPU, torch.float64)
    with pytest.raises(RuntimeError, match="device 'mps' not supported|Triton has no backend"):
        _backends.resolve("attn_pool", "triton", torch.device("mps"), torch.float32)


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setattr(kernels, "INTERPRET", False)
    assert any("TRITON_INTERPRET=1" in r for r in _triton.reasons("cpu"))
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        snr_weighted_infonce(torch.randn(3, 2), torch.randn(3, 2), backend="triton")


def test_environment_override(monkeypatch):
    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "triton")
    if not kernels.INTERPRET:
        pytest.skip("needs the Triton interpreter on this CPU test machine")
    assert _backends.resolve("attn_pool", "auto", CPU, torch.float32).name == "triton"
    assert _backends.resolve("attn_pool", "reference", CPU, torch.float32).name == (
        "reference"
    )  # an explicit argument wins
    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "attn_pool=reference,augment=triton")
    assert _backends.resolve("attn_pool", "auto", CPU, torch.float32).name == "reference"
    assert _backends.resolve("augment", "auto", CPU, torch.float32).name == "triton"
    assert _backends.resolve("adagn", "auto", CPU, torch.float64).name == "reference"
    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "cudnn")
    with pytest.raises(
        ValueError,
        match="unknown backend 'cudnn' \\(from environment variable ARCDAE_FAST_BACKEND\\)",
    ):
        _backends.resolve("adagn", "auto", CPU, torch.float32)


def test_info_reports_every_op_and_reason():
    text = report()
    for op in _backends.ops():
        assert f"{op}:" in text
    assert "cpu: auto -> " in text and "torch " in text


def test_extension_is_built_here():
    """The README's set-up builds arcdae_fast._C; a silent build failure must not pass CI."""
    from arcdae_fast.ops import _ext

    if _ext.build_info().get("why_no_cpu", "").startswith("ARCDAE_FAST_SKIP_EXT"):
        pytest.skip("installed with ARCDAE_FAST_SKIP_EXT=1")
    assert _ext.load_error() is None
    assert _ext.build_info()["cpu"] is True


def test_missing_extension_falls_back_and_says_why(monkeypatch):
    from arcdae_fast.ops import _ext, adagn

    monkeypatch.setattr(
        _ext, "load_error", lambda: "the C++ extension arcdae_fast._C is missing (simulated)"
    )
    assert _backends.resolve("adagn", "auto", CPU, torch.float32).name == "reference"
    x, s = torch.randn(2, 4, 3, 3), torch.randn(2, 4)
    with pytest.raises(RuntimeError, match=r"backend 'cpp'.*missing \(simulated\)"):
        adagn(x, None, None, s, s, groups=2, backend="cpp")
    assert "missing (simulated)" in report()


def _fast(op):
    from helpers import fast_backends

    return fast_backends(op)


@pytest.mark.parametrize("op", ["infonce", "attn_pool", "augment", "adagn"])
def test_every_selfcheck_passes_for_working_backends(op):
    import importlib

    check = importlib.import_module(f"arcdae_fast.ops.{op}")._selfcheck
    for backend in _fast(op):
        assert check(backend, CPU) is None, (op, backend)


def test_a_failing_selfcheck_disables_the_backend(monkeypatch, cpp_measured):
    from arcdae_fast.ops import _ext
    from arcdae_fast.ops import adagn as adagn_fn

    if "cpp" not in _fast("adagn"):
        pytest.skip("the C++ extension is not built")
    real = _ext.adagn.forward

    def broken(*args):
        y, *rest = real(*args)
        return (y * 1.5, *rest)

    monkeypatch.setattr(_ext.adagn, "forward", broken)
    monkeypatch.setattr(_backends, "SELFCHECK_DEVICES", {"cpu"})
    monkeypatch.setattr(_backends, "_SELFCHECKS", {})
    with pytest.warns(UserWarning, match="backend 'cpp' disabled: failed its self-check on cpu"):
        assert _backends.resolve("adagn", "auto", CPU, torch.float32, 10**7).name == "reference"
    x, s = torch.randn(2, 4, 3, 3), torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="max error"):
        adagn_fn(x, None, None, s, s, groups=2, backend="cpp")
    assert _backends.selfcheck_results()[("adagn", "cpp", "cpu")].startswith("failed")


def test_process_level_choice_precedence(monkeypatch):
    """argument > innermost use_backend > set_backend (ops.backend) > ARCDAE_FAST_BACKEND."""
    from arcdae_fast.ops import set_backend, use_backend

    monkeypatch.setenv("ARCDAE_FAST_BACKEND", "adagn=cpp")
    try:
        assert _backends.resolve("adagn", "auto", CPU, torch.float32).name == "cpp"
        set_backend("reference")
        assert _backends.resolve("adagn", "auto", CPU, torch.float32).name == "reference"
        with use_backend("adagn=cpp"):
            assert _backends.resolve("adagn", "auto", CPU, torch.float32).name == "cpp"
            with use_backend("infonce=reference"):  # says nothing about adagn: the outer block
                assert _backends.resolve("adagn", "auto", CPU, torch.float32).name == "cpp"
            assert _backends.resolve("adagn", "reference", CPU, torch.float32).name == "reference"
        with pytest.raises(RuntimeError, match=r"backend 'cpp' \(from ops.backend\)"):
            set_backend("cpp")
            _backends.resolve("adagn", "auto", CPU, torch.float64)
    finally:
        set_backend("auto")
    assert _backends.resolve("adagn", "auto", CPU, torch.float32).name == "cpp"  # env again


@pytest.mark.parametrize(
    "spec,match",
    [
        ("infonce=triton,attn_pol=reference", r"unknown op 'attn_pol'; ops: adagn, attn_pool"),
        ("snr_weighted_infonce=triton", r"the op of snr_weighted_infonce\(\) is named 'infonce'"),
        ("adagn=triton", r"unknown backend 'triton' for op 'adagn'; known: auto, cpp, cuda"),
        ("adagn", r"unknown backend 'adagn'"),
        ("infonce=", r"'infonce=' must look like op=backend"),
    ],
)
def test_a_bad_spec_is_an_error_naming_the_part(spec, match, monkeypatch):
    """Unknown op names are errors (they used to be ignored silently), from the environment
    variable and from use_backend alike."""
    from arcdae_fast.ops import use_backend

    monkeypatch.setenv("ARCDAE_FAST_BACKEND", spec)
    with pytest.raises(ValueError, match=match):
        _backends.resolve("adagn", "auto", CPU, torch.float32)
    with pytest.raises(ValueError, match="environment variable ARCDAE_FAST_BACKEND"):
        _backends.resolve("infonce", "auto", CPU, torch.float32)
    monkeypatch.delenv("ARCDAE_FAST_BACKEND")
    with pytest.raises(ValueError, match=match), use_backend(spec):
        pass


def test_bad_environment_spec_stops_the_trainer_cleanly(tmp_path):
    import subprocess
    import sys

    env = {**__import__("os").environ, "ARCDAE_FAST_BACKEND": "infonce=triton,augmnt=cpp"}
    r = subprocess.run(
        [sys.executable, "-m", "arcdae_fast.train", "--config", "quickstart.yaml"]
        + ["--out", str(tmp_path / "q"), "--max-steps", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "unknown op 'augmnt'" in r.stderr and "environment variable" in r.stderr


def test_one_op_one_name_everywhere():
    """registry key = file name (ops/, kernels/, csrc/cpu/) = custom op = C++ schema = test =
    bench (DESIGN.md)."""
    from pathlib import Path

    from arcdae_fast.ops import _ext

    root = Path(__file__).resolve().parents[1]
    for op in _backends.ops():
        table = _backends.backends(op)
        assert (root / "arcdae_fast" / "ops" / f"{op}.py").is_file(), op
        assert (root / "tests" / f"test_{op}.py").is_file(), op
        assert (root / "bench" / f"bench_{op}.py").is_file(), op
        assert hasattr(torch.ops.arcdae_fast, op), op  # the custom op
        if "triton" in table:
            assert (root / "kernels" / f"{op}.py").is_file(), op
        if "cpp" in table:
            assert (root / "csrc" / "cpu" / f"{op}.cpp").is_file(), op
            if _ext.load_error() is None:
                assert hasattr(torch.ops.arcdae_fast_C, f"{op}_forward"), op
        if "cuda" in table:
            assert (root / "csrc" / "cuda" / f"{op}.cu").is_file(), op
