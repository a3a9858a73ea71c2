"""DDAE++'s extra compute per training step against the plain U-Net (the paper: about 1%),
by the profiler's FLOP count (arcdae_fast.measure.count_flops: forward + backward, matmul,
convolution and the custom ops' registered FLOPs; norms and elementwise ops not counted).

    python bench/selfcond_flops.py [--config ddaepp.yaml] [--batch 64] [section.key=value ...]

Rows: the plain U-Net (time-conditioned only, the same sizes; the denoising loss), DDAE++
with self-conditioning alone (method.lambda_align=0), DDAE++ with the teacher's view and
InfoNCE, and (for ddaepp.yaml) DiffAE's ffhq64.yaml: the same denoiser plus its
encoder. Counted on the meta
device: shapes only, nothing is computed, so any preset size runs in seconds.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from arcdae_fast.config import load_config
from arcdae_fast.measure import count_flops
from arcdae_fast.methods import build
from arcdae_fast.models import build_denoiser


def plain_unet_flops(cfg, x0: torch.Tensor) -> float:
    unet = build_denoiser(cfg.model, cfg.data.resolution, cond_dim=None)
    t = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
    with FlopCounterMode(display=False) as counter:
        unet(x0, t).square().mean().backward()
    return counter.get_total_flops()


def method_flops(cfg, x0: torch.Tensor) -> float:
    m = build(cfg)
    return count_flops(m, x0, m.draw_inputs(x0), "fp32")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="ddaepp.yaml")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, a.overrides)
    res = cfg.data.resolution
    with torch.device("meta"):
        x0 = torch.empty(a.batch, 3, res, res)
        plain = plain_unet_flops(cfg, x0)
        rows = [("plain U-Net (time only)", plain)]
        alone = load_config(a.config, [*a.overrides, "method.lambda_align=0"])
        rows.append(("DDAE++ self-conditioning alone", method_flops(alone, x0)))
        rows.append(("DDAE++ + teacher view + InfoNCE", method_flops(cfg, x0)))
        if a.config == "ddaepp.yaml":  # the same denoiser sizes (DiffAE's 64 px)
            diffae = load_config("ffhq64.yaml", ["method.name=diffae"])
            rows.append(("DiffAE, ffhq64.yaml (own encoder)", method_flops(diffae, x0)))
    print(f"{a.config} at {res} px, batch {a.batch}: training-step FLOPs (fwd + bwd)")
    print(f"{'':34s} {'GFLOP':>10s} {'vs plain':>9s}")
    for name, f in rows:
        print(f"{name:34s} {f / 1e9:10.1f} {100 * (f / plain - 1):+8.2f}%")


if __name__ == "__main__":
    main()
