"""The profiling tool: timings, phases, FLOPs, MFU, traces; every preset; the FLOP formulas
of the custom ops."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from arcdae_fast.config import list_presets
from arcdae_fast.methods.arcdae import ArcDAE
from arcdae_fast.ops import attention_pool, snr_weighted_infonce
from arcdae_fast.phases import PREFIX
from arcdae_fast.profile import main

KEYS = {"img_per_s", "ms_per_step", "peak_mem_bytes", "flops_per_step", "mfu", "phases"}


def test_profile_eager_step_json_trace_and_phases(tiny_config_file, tmp_path, capsys):
    js, trace = tmp_path / "p.json", tmp_path / "trace.json"
    argv = ["--config", str(tiny_config_file), "--variant", "eager", "--steps", "2"]
    argv += ["--warmup", "1", "--json", str(js), "--trace", str(trace), "--peak-tflops", "2"]
    assert main([*argv, "train.precision=fp32"]) == 0
    r = json.loads(js.read_text())
    assert KEYS <= set(r)
    assert r["variant"] == "eager" and r["precision"] == "fp32"
    assert r["ms_per_step"] > 0 and r["peak_mem_bytes"] > 0 and r["flops_per_step"] > 1e6
    assert r["img_per_s"] == pytest.approx(8 * 1e3 / r["ms_per_step"], rel=0.5)
    assert r["mfu"] == pytest.approx(r["flops_per_step"] / (r["ms_per_step"] / 1e3) / 2e12)
    ph = r["phases"]
    for name in ("data", "draw inputs", "forward", "backward", "optimizer", "ema", *ArcDAE.PHASES):
        assert ph[name]["ms_per_step"] > 0, name
    assert ph["denoiser bwd"]["ms_per_step"] > 0
    inner = sum(ph[n]["ms_per_step"] for n in ArcDAE.PHASES)
    assert inner <= ph["forward"]["ms_per_step"] * 1.01
    assert ph["denoiser bwd"]["ms_per_step"] < ph["backward"]["ms_per_step"]
    assert r["top_ops"] and "convolution" in " ".join(o["name"] for o in r["top_ops"])
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name") == PREFIX + "denoiser fwd" for e in events)
    assert "denoiser bwd" in capsys.readouterr().out


def test_profile_flops_follow_the_jacobian_schedule(tiny_config_file, tmp_path):
    def flops(*sets):
        js = tmp_path / "f.json"
        argv = ["--config", str(tiny_config_file), "--variant", "eager", "--steps", "1"]
        assert main([*argv, "--warmup", "0", "--json", str(js), *sets]) == 0
        return json.loads(js.read_text())["flops_per_step"]

    every, lazy, off = flops(), flops("method.jac_every=2"), flops("method.lambda_jac=0")
    assert off < lazy < every
    assert lazy == pytest.approx((every + off) / 2)


# presets that differ from another one's code path by their sizes only: they build on the meta
# device below instead (profiling DGAE-L's 500M parameters took ~3 min of set-up here)
SIZE_VARIANTS = {
    "dgae-m.yaml": "dgae-b.yaml",
    "dgae-l.yaml": "dgae-b.yaml",
    "celeba64.yaml": "ffhq64.yaml",
}


@pytest.mark.parametrize("preset", sorted(SIZE_VARIANTS))
def test_size_variant_presets_build(preset):
    from arcdae_fast.config import load_config
    from arcdae_fast.methods import build

    cfg = load_config(preset, ["method.lpips_weights=random"] if "dgae" in preset else [])
    assert cfg.method.name == load_config(SIZE_VARIANTS[preset]).method.name
    with torch.device("meta"):
        assert sum(p.numel() for p in build(cfg).parameters()) > 0


@pytest.mark.parametrize("preset", [p for p in list_presets() if p not in SIZE_VARIANTS])
def test_profile_runs_on_every_preset(preset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the quickstart data is generated under ./data
    js = tmp_path / "p.json"
    argv = ["--config", preset, "--variant", "eager", "--batch-size", "2", "--steps", "1"]
    if "quickstart" not in preset:
        # the full-size networks at 32 px (the smallest every preset's levels divide): the
        # preset builds and profiles the same; at their own sizes one step took up to 2.5 min
        argv.append("data.resolution=32")
    if preset in ("dgae-b.yaml", "dgae-m.yaml", "dgae-l.yaml"):
        argv.append("method.lpips_weights=random")  # its VGG weights are not on this machine
    assert main([*argv, "--warmup", "0", "--json", str(js), "--top", "3"]) == 0
    r = json.loads(js.read_text())
    assert r["ms_per_step"] > 0 and r["flops_per_step"] > 0
    if "quickstart" not in preset:  # FFHQ / CelebA / ImageNet: no data.root here
        assert r["data"].startswith("synthetic random images")
        assert main([*argv, "--warmup", "0", "--data", "real"]) == 2
        assert "data.root is not set" in capsys.readouterr().err


def test_custom_op_flop_formulas_match_the_reference():
    from helpers import fast_backends

    g = torch.Generator().manual_seed(0)

    def count(fn):
        with FlopCounterMode(display=False) as c:
            fn()
        return c.get_total_flops()

    q, k = (torch.randn(64, 32, generator=g, requires_grad=True) for _ in range(2))
    x = torch.randn(4, 16, 24, generator=g, requires_grad=True)
    pq, pw = torch.randn(3, 8, requires_grad=True), torch.randn(8, 24, requires_grad=True)
    for be in fast_backends("infonce"):
        want = count(lambda: snr_weighted_infonce(q, k, symmetric=True).backward())
        got = count(lambda be=be: snr_weighted_infonce(q, k, symmetric=True, backend=be).backward())
        assert got == want == 6 * 64 * 64 * 32
    for be in fast_backends("attn_pool"):
        want = count(lambda: attention_pool(x, pq, pw, backend="reference").sum().backward())
        got = count(lambda be=be: attention_pool(x, pq, pw, backend=be).sum().backward())
        assert got == want > 0
