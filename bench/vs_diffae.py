"""The engine's DiffAE training step against DiffAE's own, side by side in one process.

    python bench/vs_diffae.py --diffae-src /tmp/diffae [--config quickstart] [--batch 32]

DiffAE's step is its own code, read from --diffae-src at run time (nothing of it is in this
repository): its BeatGANsAutoencModel at the config's sizes, GaussianDiffusionBeatGans'
training_losses (linear betas, eps, MSE), uniform t, AdamW, clip_grad_norm_(1.0) and its
state-dict EMA (experiment.py's `ema`). The engine's: the `diffae` method on the same network
(parameter counts printed, they must be equal) through session.build, in each variant:
eager fp32 and (where the CPU computes it natively) eager bf16, each with the default and
with the reference op backends, and the compiled step (--compiled: fp32, and bf16 where
native; a compile of minutes each).
Where the CPU computes bf16 natively, DiffAE's step also runs under CPU bf16 autocast (its
own code, in the precision the engine's default step uses there: DiffAE's `fp16` flag is a
CUDA autocast), and each engine row is compared with DiffAE's row of its own precision.
Same batch for all; rounds interleave the variants (the machine is shared and noisy); the
median step time per variant, its ratio to DiffAE's, and a per-phase breakdown (DiffAE:
forward = training_losses, backward, optimizer = clipping + AdamW, EMA; engine: its phases,
host time) are printed and appended as JSON to --out.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, device_name, git_commit, versions  # noqa: E402
from diffae_fidelity import count, diffae_model  # noqa: E402

from arcdae_fast import phases, session  # noqa: E402
from arcdae_fast.config import load_config  # noqa: E402
from arcdae_fast.ops import _backends  # noqa: E402
from arcdae_fast.step import native_bf16  # noqa: E402


def theirs(src: Path, cfg, lr: float):
    """DiffAE's model, sampler, optimizer and EMA copy for the engine config's network."""
    d, e = cfg.model.denoiser, cfg.model.encoder
    model = diffae_model(
        src,
        cfg.data.resolution,
        d.base_channels,
        tuple(d.channel_mult),
        tuple(e.channel_mult),
        num_res_blocks=d.num_res_blocks,
        attention_resolutions=tuple(d.attn_resolutions),
        dropout=d.dropout,
        embed_channels=d.embed_channels,
        enc_out_channels=e.z_dim,
        enc_num_res_block=e.num_res_blocks,
        # None would mean the denoiser's; a resolution no encoder level has means none
        enc_attn_resolutions=tuple(e.attn_resolutions) or (-1,),
    )
    from choices import GenerativeType, LossType, ModelMeanType, ModelType, ModelVarType
    from diffusion.base import GaussianDiffusionBeatGansConfig, get_named_beta_schedule

    sampler = GaussianDiffusionBeatGansConfig(
        gen_type=GenerativeType.ddpm,
        betas=get_named_beta_schedule("linear", cfg.diffusion.T),
        model_type=ModelType.autoencoder,
        model_mean_type=ModelMeanType.eps,
        model_var_type=ModelVarType.fixed_large,
        loss_type=LossType.mse,
        rescale_timesteps=False,
        fp16=False,
    ).make_sampler()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    return model, sampler, opt, copy.deepcopy(model)


def diffae_step(model, sampler, opt, ema_model, x, T: int, times: dict, bf16: bool) -> None:
    """One step of DiffAE's experiment.py, timed per phase (bf16: its forward and loss under
    CPU bf16 autocast, as its fp16 flag does on CUDA)."""
    t0 = time.perf_counter()
    t = torch.randint(0, T, (len(x),))
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        losses = sampler.training_losses(model=model, x_start=x, t=t)
    loss = losses["loss"].float().mean()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
    opt.step()
    t3 = time.perf_counter()
    src, tgt = model.state_dict(), ema_model.state_dict()  # experiment.py's ema()
    for k in src:
        tgt[k].data.copy_(tgt[k].data * 0.9999 + src[k].data * (1 - 0.9999))
    t4 = time.perf_counter()
    for k, v in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
        times[k] = times.get(k, 0.0) + v
    times["ema"] = times.get("ema", 0.0) + t4 - t3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--diffae-src", type=Path, required=True)
    p.add_argument("--config", default="quickstart")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compiled", action="store_true", help="also the compiled step")
    p.add_argument("--out", default=str(RESULTS / "vs_diffae_cpu.jsonl"))
    a = p.parse_args(argv)
    sets = ["method.name=diffae", f"train.batch_size={a.batch}", "train.device=cpu"]
    sets += ["train.step=eager", "model.denoiser.dropout=0"]
    # the steps train on one random batch: the bundled faces stand in for the preset's data
    # set (FFHQ is not on the machine), so that the session builds
    sets += ["data.dataset=synthetic", "data.synthetic_count=64"]
    if a.resolution:
        sets.append(f"data.resolution={a.resolution}")
    cpu = torch.device("cpu")
    variants = {"eager-fp32": ["train.precision=fp32"]}
    variants["eager-fp32-reference-ops"] = ["train.precision=fp32", "ops.backend=reference"]
    if native_bf16(cpu):
        variants["eager-bf16"] = ["train.precision=bf16"]
        variants["eager-bf16-reference-ops"] = ["train.precision=bf16", "ops.backend=reference"]
    if a.compiled:
        variants["compiled-fp32"] = ["train.precision=fp32", "train.step=compiled"]
        if native_bf16(cpu):
            variants["compiled-bf16"] = ["train.precision=bf16", "train.step=compiled"]
    sessions = {}
    for name, extra in variants.items():
        cfg = load_config(a.config, [*sets, *extra])
        torch.manual_seed(0)
        sessions[name] = session.build(cfg)
    cfg = sessions["eager-fp32"].cfg
    own = {"diffae": theirs(a.diffae_src, cfg, cfg.train.lr)}  # DiffAE's, one per precision
    if "eager-bf16" in variants:
        own["diffae-bf16"] = theirs(a.diffae_src, cfg, cfg.train.lr)
    model = own["diffae"][0]
    ours_n = sum(p.numel() for p in sessions["eager-fp32"].method.trainable().parameters())
    print(f"parameters: DiffAE {count(model):,}, engine {ours_n:,}")
    if count(model) != ours_n:
        print("not the same network: the comparison would mean nothing", file=sys.stderr)
        return 1
    g = torch.Generator().manual_seed(0)
    res = cfg.data.resolution
    x = torch.rand(a.batch, 3, res, res, generator=g) * 2 - 1
    per_step: dict[str, list[float]] = {n: [] for n in [*own, *variants]}
    breakdown: dict[str, dict[str, float]] = {n: {} for n in per_step}
    phases.timing(True)

    def ours(name: str, k: int) -> None:
        s = sessions[name]
        _backends.set_backend(s.cfg.ops.backend)
        with phases.phase("draw inputs"):
            inputs = s.inputs(x, k)
        s.step(x, inputs, k)

    for r in range(a.rounds + 1):  # round 0 warms up (and compiles)
        for name in per_step:
            times: dict[str, float] = {}
            phases.take()
            t0 = time.perf_counter()
            for k in range(a.steps):
                if name in own:
                    T, bf16 = cfg.diffusion.T, name.endswith("bf16")
                    diffae_step(*own[name], x, T, times, bf16)
                else:
                    ours(name, r * a.steps + k)
            dt = (time.perf_counter() - t0) / a.steps
            times = times if name in own else phases.take()
            if r:
                per_step[name].append(dt)
                for ph, v in times.items():
                    breakdown[name][ph] = breakdown[name].get(ph, 0.0) + v / a.steps / a.rounds
            print(f"round {r} {name}: {1e3 * dt:.1f} ms/step", flush=True)
    phases.timing(False)

    def base(name: str) -> float:  # DiffAE's own step at the row's precision
        theirs_name = "diffae-bf16" if "bf16" in name and "diffae-bf16" in own else "diffae"
        return statistics.median(per_step[theirs_name])

    print(
        f"\n{device_name(cpu)}; {a.config} network, batch {a.batch} at {res} px, fp32 unless named"
    )
    print(f"{'variant':<26}{'ms/step':>9}{'img/s':>8}{'vs DiffAE':>11}  phases (ms/step)")
    print("(vs DiffAE: against DiffAE's own step at the row's precision)")
    rows = []
    for name, ts in per_step.items():
        ms = 1e3 * statistics.median(ts)
        ratio = base(name) * 1e3 / ms
        ph = ", ".join(f"{k} {1e3 * v:.1f}" for k, v in sorted(breakdown[name].items()))
        print(f"{name:<26}{ms:>9.1f}{a.batch / ms * 1e3:>8.1f}{ratio:>10.2f}x  {ph}")
        rows.append(
            {
                "variant": name,
                "ms_per_step": ms,
                "vs_diffae": ratio,
                "phases_ms": {k: 1e3 * v for k, v in breakdown[name].items()},
            }
        )
    env = {
        "device": device_name(cpu),
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "config": a.config,
        "batch": a.batch,
        "resolution": res,
        "rounds": a.rounds,
        "steps": a.steps,
        **versions(),
    }
    with open(a.out, "a") as f:
        for r in rows:
            f.write(json.dumps({**env, **r}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
