"""Count the engine's DGAE networks against their sources, side by side in one process.

    git clone https://github.com/CompVis/latent-diffusion /tmp/latent-diffusion
    python bench/dgae_fidelity.py --ldm-src /tmp/latent-diffusion

1. the spatial VAE encoder of dgae-b.yaml against SD-VAE's: latent-diffusion's `Encoder`
   built from models/first_stage_models/kl-f16/config.yaml (ch 128, ch_mult 1 1 2 2 4, two
   res blocks, attention at 16, z_channels 16, double_z) plus AutoencoderKL's quant_conv,
   block by block (conv_in, each level's res blocks / attention / downsampling, the middle,
   the output);
2. the decoders of dgae-b / m / l against the paper's 122M / 276M / 491M (the paper's U-Net
   code is not public: these are counts of our layout, not a match).
latent-diffusion's code is only read from --ldm-src (its einops / ldm.util imports stubbed,
as the encoder does not use them); nothing of it is part of this repository.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arcdae_fast.config import load_config  # noqa: E402
from arcdae_fast.methods import build  # noqa: E402

PAPER = {"dgae-b": 122e6, "dgae-m": 276e6, "dgae-l": 491e6}


def ldm_encoder(src: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """latent-diffusion's kl-f16 Encoder and quant_conv, from its own code and config."""
    for name, attrs in {
        "einops": {"rearrange": None},
        "ldm.util": {"instantiate_from_config": None},
        "ldm.modules.attention": {"LinearAttention": torch.nn.Module},
    }.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules.setdefault(name, mod)
    sys.path.insert(0, str(src))
    from ldm.modules.diffusionmodules.model import Encoder

    conf = yaml.safe_load((src / "models/first_stage_models/kl-f16/config.yaml").read_text())
    params = conf["model"]["params"]
    dd = params["ddconfig"]
    enc = Encoder(**dd)
    quant = torch.nn.Conv2d(2 * dd["z_channels"], 2 * params["embed_dim"], 1)
    return enc, quant


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def ldm_blocks(enc, quant) -> list[tuple[str, int]]:
    rows = [("conv_in", count(enc.conv_in))]
    for i, level in enumerate(enc.down):
        rows.append((f"level {i}", count(level)))
    rows.append(("middle", count(enc.mid)))
    rows.append(
        (
            "out (norm, conv_out, quant_conv)",
            count(enc.norm_out) + count(enc.conv_out) + count(quant),
        )
    )
    return rows


def our_blocks(vae, levels: int, per_level: int) -> list[tuple[str, int]]:
    stages = list(vae.down)
    rows = [("conv_in", count(stages[0]))]
    k = 1
    for i in range(levels):
        n = per_level + (i != levels - 1)  # res blocks (+ attention), then the downsampling
        rows.append((f"level {i}", sum(count(s) for s in stages[k : k + n])))
        k += n
    rows.append(("middle", count(vae.middle)))
    rows.append(
        (
            "out (norm, conv_out, quant_conv)",
            count(vae.out_norm) + count(vae.out_conv) + count(vae.moments),
        )
    )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ldm-src", type=Path, required=True)
    a = p.parse_args()
    enc, quant = ldm_encoder(a.ldm_src)
    cfg = load_config("dgae-b", ["method.eta=0"])
    with torch.device("meta"):
        ours = build(cfg)
    e = cfg.model.encoder
    theirs = ldm_blocks(enc, quant)
    mine = our_blocks(ours.encoder, len(e.channel_mult), e.num_res_blocks)
    print("SD-VAE kl-f16 encoder (latent-diffusion) vs dgae-b's, parameters per block")
    print(f"{'block':36s} {'ldm':>12s} {'ours':>12s}")
    for (name, n), (_, m) in zip(theirs, mine):
        print(f"{name:36s} {n:12,d} {m:12,d}{'' if n == m else '  DIFFERENT'}")
    total_t, total_o = count(enc) + count(quant), count(ours.encoder)
    print(f"{'total':36s} {total_t:12,d} {total_o:12,d}")
    print("\ndecoders (the paper's U-Net code is not public: our ADM-256 layout's counts)")
    for name, paper in PAPER.items():
        with torch.device("meta"):
            m = build(load_config(name, ["method.eta=0"]))
        n = count(m.denoiser)
        print(f"{name}: {n:,d} ({n / 1e6:.1f}M; paper {paper / 1e6:.0f}M, {n / paper - 1:+.1%})")
    ok = all(n == m for (_, n), (_, m) in zip(theirs, mine))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
