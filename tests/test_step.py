"""The compiled step computes what the eager step computes.

Tolerances (fp32, CPU, dropout 0): Inductor fuses and reorders float32 reductions, so single
terms differ by float32 rounding (~1e-6 relative). The fd Jacobian term divides code
differences by fd_eps = 1e-3, which turns 1e-7-level rounding into ~1e-4-level differences
in that term and in the gradients flowing through it; gradients are therefore compared by the
relative norm of the difference per parameter tensor (<= 2e-3), the fd term to 2e-3 relative
and the other loss terms to 1e-4 relative.
"""

import copy
import json

import pytest
import torch

from arcdae_fast.config import ConfigError, from_dict
from arcdae_fast.ema import frozen_copy
from arcdae_fast.methods.arcdae import ArcDAE
from arcdae_fast.step import CompiledStep, EagerStep, build_optimizer, native_bf16
from arcdae_fast.train import main

GRAD_RTOL = 2e-3
LOSS_RTOL = 1e-4
JAC_RTOL = 2e-3  # the fd term and the total that contains it


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check_compiled_step_matches_eager(cfg, method_cls, x0, compile_backend="inductor"):
    """A method's compiled step against its eager step (fp32): every term, the gradient norm and
    every parameter's gradient; zero-initialised layers re-drawn so every path is live; and
    the second step runs the same graph (no recompile). compile_backend "aot_eager" checks
    the full-graph capture and AOTAutograd's joint graph without Inductor's code generation
    (minutes less on 2 cores; Inductor's numerics are the ArcDAE step tests' below)."""
    torch.manual_seed(0)
    ref_model = method_cls(cfg)
    for p in ref_model.parameters():
        if p.abs().max() == 0:
            p.data.normal_(std=0.05)
    fast_model = copy.deepcopy(ref_model)
    ref = make(cfg, EagerStep, ref_model)
    fast = make(cfg, CompiledStep, fast_model, compile_backend=compile_backend)
    inputs = ref_model.draw_inputs(x0, torch.Generator().manual_seed(1))
    want, got = ref(x0, inputs, 0), fast(x0, inputs, 0)
    for k in (*ref_model.terms(), "grad_norm"):
        assert want[k].item() != 0.0, k
        assert rel_err(got[k], want[k]) <= LOSS_RTOL, (k, got[k].item(), want[k].item())
    named = dict(fast_model.named_parameters())
    for name, p in ref_model.named_parameters():
        if p.grad is not None:
            assert rel_err(named[name].grad, p.grad) <= GRAD_RTOL, name
    with torch._dynamo.config.patch(error_on_recompile=True):
        fast(x0, ref_model.draw_inputs(x0, torch.Generator().manual_seed(2)), 1)


def make(cfg, cls, model, **kw):
    ema = frozen_copy(model.trainable())
    opt, sched = build_optimizer(model, 1e-3, (0.9, 0.999), 0.0, 0)
    kw.setdefault("precision", "fp32")
    return cls(model, ema, opt, sched, grad_clip=1.0, ema_decay=0.9, **kw)


@pytest.mark.xdist_group("arcdae-step")
@pytest.mark.timeout(1500)  # a cold whole-step compile: minutes on 2 cores
def test_compiled_step_matches_eager_terms_gradients_and_update(synth_root):
    from conftest import compile_raw

    cfg = from_dict(compile_raw(synth_root))
    torch.manual_seed(0)
    ref_model = ArcDAE(cfg)
    fast_model = copy.deepcopy(ref_model)
    ref = make(cfg, EagerStep, ref_model)
    fast = make(cfg, CompiledStep, fast_model)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
    inputs = ref_model.draw_inputs(x0, g)
    assert ref_model.flags(0) == {"jac": True}  # step 0 computes every term

    want = ref(x0, inputs, 0)
    got = fast(x0, inputs, 0)
    for k in (*ref_model.terms(), "grad_norm"):
        assert want[k].item() != 0.0, k  # every term is live
        tol = JAC_RTOL if k in ("loss_jac", "loss") else LOSS_RTOL
        assert rel_err(got[k], want[k]) <= tol, (k, got[k].item(), want[k].item())
    named = dict(fast_model.named_parameters())
    grads = {n: p.grad for n, p in ref_model.named_parameters()}
    checked, worst = 0, 0.0
    for name, p in ref_model.named_parameters():
        q = named[name]
        if name.startswith("teacher."):  # EMA of the student: follows the student's update
            g = grads["encoder." + name.removeprefix("teacher.")]
        else:
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is None:
                continue
            worst = max(worst, rel_err(q.grad, p.grad))
            assert rel_err(q.grad, p.grad) <= GRAD_RTOL, (name, rel_err(q.grad, p.grad))
            g = p.grad
            checked += 1
        # after the AdamW update and the teacher EMA: Adam's first step is ~lr * sign(grad),
        # so entries whose gradient is ~0 may flip; every other entry lands on the same value
        off = (q - p).abs() > 1e-6 + 1e-4 * p.abs()
        assert not (off & (g.abs() > 1e-2 * g.abs().max())).any(), name
    assert checked == len(ref.params)
    print(f"worst relative gradient difference {worst:.2e}")
    # the next step runs the same graph: nothing the first trace saw may change its guards
    # (a backend-choice cache filled during the trace once made every run compile twice)
    with torch._dynamo.config.patch(error_on_recompile=True):
        fast(x0, ref_model.draw_inputs(x0, torch.Generator().manual_seed(2)), 1)
    # channels_last on CUDA only (slower with oneDNN on CPU)
    conv = next(m for m in fast_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert fast.channels_last == conv.weight.is_cuda
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == conv.weight.is_cuda


def check_bf16_grads_as_accurate(cfg, method_cls, x0):
    """Under bf16 autocast the eager and compiled steps round differently, so they are compared
    through their distance to the float32 gradients: per parameter tensor, the compiled step's
    error may be at most twice the eager step's plus 0.02 (measured: both ~0.01-0.04; the fd
    Jacobian's float32 region once ran its backward in bf16 under compile, a 7x error on the
    holistic head). Zero-initialised layers are re-drawn first, so that every parameter has a
    gradient to compare (with them at zero, the inner blocks' gradients are zero in every
    variant, which hid Inductor's all-zero bf16 gradients under nearest upsampling: DGAE)."""
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    base = method_cls(cfg)
    for p in base.parameters():
        if p.abs().max() == 0:
            p.data.normal_(std=0.05)
    inputs = base.draw_inputs(x0, g)
    grads = {}
    for name, cls, precision in (
        ("fp32", EagerStep, "fp32"),
        ("eager", EagerStep, "bf16"),
        # "auto" where it means bf16: the trainer's default path
        ("compiled", CompiledStep, "auto" if native_bf16(torch.device("cpu")) else "bf16"),
    ):
        model = copy.deepcopy(base)
        make(cfg, cls, model, precision=precision)(x0, inputs, 0)
        grads[name] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads["compiled"].keys() == grads["fp32"].keys()
    checked = 0
    for n, want in grads["fp32"].items():
        if want.abs().max() == 0:
            continue
        ref, got = rel_err(grads["eager"][n], want), rel_err(grads["compiled"][n], want)
        assert got <= 2 * ref + 0.02, (n, got, ref)
        checked += 1
    assert checked >= 0.9 * len(grads["fp32"]), (checked, len(grads["fp32"]))


@pytest.mark.xdist_group("arcdae-step")
@pytest.mark.timeout(1500)  # a cold whole-step compile: minutes on 2 cores
def test_compiled_step_in_bf16_is_as_accurate_as_the_eager_step_in_bf16(synth_root):
    from conftest import compile_raw

    x0 = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    check_bf16_grads_as_accurate(from_dict(compile_raw(synth_root)), ArcDAE, x0)


def test_auto_takes_the_compiled_step_only_where_it_agreed_and_was_fast(
    tiny_cfg, tmp_path, monkeypatch
):
    """train.step=auto reads step agreement's record for this device class, method and
    precision: compiled only for a passed agreement with a quiet-machine speed-up >= 1.1x."""
    from arcdae_fast import evidence
    from arcdae_fast.step import choose_step

    raw = tiny_cfg.to_dict()
    raw["train"].update(step="auto", precision="fp32")
    cfg = from_dict(raw)
    method, cpu = ArcDAE(cfg), torch.device("cpu")
    path = tmp_path / "evidence.json"
    monkeypatch.setattr(evidence, "PATH", path)

    def record(**entry):
        entry |= {"device": "a test CPU", "date": "2026-12-07"}
        steps = {cfg.method.name: {"fp32": entry}}
        path.write_text(json.dumps({evidence.device_class(cpu): {"steps": steps}}))
        return choose_step(cfg, method, cpu)

    kind, why = choose_step(cfg, method, cpu)
    assert kind == "eager" and "no step-agreement record for arcdae fp32" in why
    kind, why = record(ok=True, speedup=1.25)
    assert kind == "compiled" and "agreed and ran 1.25x" in why and "a test CPU" in why
    kind, why = record(ok=True, speedup=1.05)
    assert kind == "eager" and "below 1.1x" in why
    kind, why = record(ok=False, speedup=1.5)
    assert kind == "eager" and "failed step agreement" in why
    kind, why = record(ok=True, speedup=None)  # measured on a busy machine
    assert kind == "eager" and "quiet machine" in why
    raw["train"]["step"] = "eager"  # an explicit choice is not overruled
    assert choose_step(from_dict(raw), method, cpu)[0] == "eager"


def test_step_record_keeps_every_preset_and_names_the_slowest(tmp_path, monkeypatch):
    """bench/step_agreement.py --record, preset by preset: a method's verdict is ok only when
    every preset of the day passed, at the slowest preset's speed-up (named in the reason);
    re-recording one preset keeps the others; a new day starts afresh."""
    from arcdae_fast import evidence

    monkeypatch.setattr(evidence, "PATH", tmp_path / "evidence.json")

    def record(preset, ok, speedup, date="2026-12-07"):
        rows = {"compiled-bf16": {"ok": ok, "speedup_vs_eager": speedup}}
        env = {"device": "a test CPU", "date": date, "commit": "abc", "steps": 50}
        evidence.record_steps("cpu-test", {preset: {"method": "ddaepp", "rows": rows}}, env)
        return evidence.step_verdict("cpu-test", "ddaepp", "bf16")

    assert record("ddaepp", True, 1.3) == (
        True,
        "the compiled bf16 step agreed and ran 1.30x the eager one at preset ddaepp on "
        "cpu-test (a test CPU, 2026-12-07)",
    )
    fast, why = record("ddaepp-full", True, 0.9)
    assert not fast and "ran 0.90x the eager one at preset ddaepp-full" in why
    fast, why = record("ddaepp", False, 1.3)  # a re-measure of one preset keeps the other
    assert not fast and "failed step agreement at preset ddaepp on" in why
    entry = evidence.load()["cpu-test"]["steps"]["ddaepp"]["bf16"]
    assert sorted(entry["presets"]) == ["ddaepp", "ddaepp-full"]
    assert entry["speedup"] == 0.9 and entry["slowest"] == "ddaepp-full"
    assert record("ddaepp", True, 1.3, date="2026-12-08")[0]  # a new day: only its presets
    assert list(evidence.load()["cpu-test"]["steps"]["ddaepp"]["bf16"]["presets"]) == ["ddaepp"]


def test_compiled_step_refuses_jvp(tiny_cfg):
    raw = tiny_cfg.to_dict()
    raw["method"]["jac_estimator"] = "jvp"
    cfg = from_dict(raw)  # the tests' config runs the eager step
    with pytest.raises(ValueError, match="jac_estimator=fd"):
        make(cfg, CompiledStep, ArcDAE(cfg))
    raw["train"]["step"] = "compiled"
    with pytest.raises(ConfigError, match="train.step=compiled needs method.jac_estimator=fd"):
        from_dict(raw)


def curve(cfg_file, out, step):
    argv = ["--config", str(cfg_file), "--out", str(out), "--no-progress", "--max-steps", "30"]
    sets = [
        f"train.step={step}",
        "train.precision=fp32",
        "model.denoiser.dropout=0",
        "train.log_every=1",
    ]
    sets += ["train.sample_every=0", "train.ckpt_every=30"]
    assert main([*argv, *sets]) == 0
    return [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.xdist_group("arcdae-step")
@pytest.mark.timeout(1500)  # a cold whole-step compile: minutes on 2 cores
def test_compiled_and_eager_training_curves_agree(compile_config_file, tmp_path, capsys):
    # the first test's network and batch: Inductor's FX graph cache can serve its graphs
    ref = curve(compile_config_file, tmp_path / "ref", "eager")
    fast = curve(compile_config_file, tmp_path / "fast", "compiled")
    assert "step: compiled" in capsys.readouterr().err
    assert len(ref) == len(fast) == 30
    worst = max(abs(a - b) / b for a, b in zip(fast, ref))
    assert worst < 1e-2, worst  # 30 AdamW steps later the two runs are still the same run
    assert sum(fast[-5:]) < sum(fast[:5])  # and it learns


def _step_agreement():
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import step_agreement

    return step_agreement


@pytest.mark.xdist_group("arcdae-step")
@pytest.mark.timeout(1500)  # compiles; the first tests' graphs (FX graph cache)
def test_step_agreement_at_ci_size(synth_root):
    """bench/step_agreement.py at CI size: the compile tests' network and batch, 10 steps,
    Inductor (not aot_eager): the compiled fp32 step (and bf16 where the CPU computes it
    natively) within the tolerances the bench states, no non-finite step."""
    from conftest import compile_raw

    cpu = torch.device("cpu")
    sa = _step_agreement()
    cfg = from_dict(compile_raw(synth_root))
    variants = ("compiled-fp32",) + (("compiled-bf16",) if native_bf16(cpu) else ())
    rows = sa.agree(cfg, cpu, steps=10, only=variants)
    for v in variants:
        assert "error" not in rows[v] and rows[v]["nonfinite"] == 0, rows[v]
        assert rows[v]["ok"], (v, rows[v], rows["eager-fp32-rounded"], rows["eager-bf16"])


@pytest.mark.skipif(
    not native_bf16(torch.device("cpu")),
    reason="bf16 is emulated on this CPU (no AVX512-BF16 or AMX); the compiled bf16 step "
    "went NaN at step 1 where bf16 is native (issue 29)",
)
@pytest.mark.xdist_group("arcdae-step")
@pytest.mark.timeout(1500)  # a cold compile of the quickstart network
def test_compiled_bf16_quickstart_step_stays_finite_and_agrees():
    """The configuration that went NaN on an AMX CPU: the quickstart network, bf16 autocast,
    the compiled step, 4 steps; finite and within the bf16 tolerance of step agreement."""
    cpu = torch.device("cpu")
    sa = _step_agreement()
    cfg = sa.preset_config("arcdae", cpu, batch=8, resolution=None)
    rows = sa.agree(cfg, cpu, steps=4, only=("compiled-bf16",))
    assert "error" not in rows["compiled-bf16"], rows["compiled-bf16"]
    assert rows["compiled-bf16"]["nonfinite"] == 0, rows["compiled-bf16"]
    assert rows["compiled-bf16"]["ok"], rows
