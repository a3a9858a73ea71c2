"""Check the engine's DiffAE network against DiffAE's own code, side by side in one process.

    git clone https://github.com/phizaz/diffae /tmp/diffae
    python bench/diffae_fidelity.py --diffae-src /tmp/diffae [--keys FILE]

1. parameter counts per block, ours (ffhq.yaml, ffhq64.yaml, celeba64.yaml with
   method.name=diffae) against DiffAE's BeatGANsAutoencModel built from its templates.py
   settings (ffhq128_autoenc_base, ffhq64_autoenc, celeba64d2c_autoenc);
2. the functions: a randomly initialised DiffAE model (zero-initialised layers re-drawn, so
   every path carries signal) is saved as DiffAE's LitModel would save it, converted with
   `python -m arcdae_fast.convert diffae`, and both networks run on the same images, noise,
   timesteps and codes in float32, eval mode: the encoder's z and the denoiser's prediction
   must agree to float32 rounding.
--keys writes DiffAE's FFHQ-128 state-dict keys and shapes (tests/golden/diffae_ffhq128_keys.txt).
DiffAE's code is only read from --diffae-src; nothing of it is part of this repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arcdae_fast.config import load_config  # noqa: E402
from arcdae_fast.convert import convert_diffae  # noqa: E402
from arcdae_fast.methods import build  # noqa: E402

# DiffAE's templates.py: (img_size, net_ch, net_ch_mult, net_enc_channel_mult); the rest is
# autoenc_base(): attention at 16, one head, embed 512, style 512, resblock_updown, 2 blocks
DIFFAE = {
    "ffhq.yaml": (128, 128, (1, 1, 2, 3, 4), (1, 1, 2, 3, 4, 4)),
    "ffhq64.yaml": (64, 64, (1, 2, 4, 8), (1, 2, 4, 8, 8)),
    "celeba64.yaml": (64, 64, (1, 2, 4, 8), (1, 2, 4, 8, 8)),
}


def diffae_model(src: Path, img: int, ch: int, mult: tuple, emult: tuple, **kw):
    sys.path.insert(0, str(src))
    from model.unet_autoenc import BeatGANsAutoencConfig

    conf = dict(
        attention_resolutions=(16,),
        channel_mult=mult,
        conv_resample=True,
        dims=2,
        dropout=0.1,
        embed_channels=512,
        enc_out_channels=512,
        enc_pool="adaptivenonzero",
        enc_num_res_block=2,
        enc_channel_mult=emult,
        enc_grad_checkpoint=False,
        enc_attn_resolutions=None,
        image_size=img,
        in_channels=3,
        model_channels=ch,
        num_classes=None,
        num_head_channels=-1,
        num_heads_upsample=-1,
        num_heads=1,
        num_res_blocks=2,
        num_input_res_blocks=None,
        out_channels=3,
        resblock_updown=True,
        use_checkpoint=False,
        use_new_attention_order=False,
        resnet_two_cond=True,
        resnet_use_zero_module=True,
        latent_net_conf=None,
        resnet_cond_channels=None,
    )
    conf.update(kw)
    return BeatGANsAutoencConfig(**conf).make_model()


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def blocks_theirs(d) -> tuple[list[int], list[int]]:
    den = [count(d.time_embed), *map(count, d.input_blocks), count(d.middle_block)]
    den += [*map(count, d.output_blocks), count(d.out)]
    e = d.encoder
    return den, [*map(count, e.input_blocks), count(e.middle_block), count(e.out)]


def blocks_ours(m) -> tuple[list[int], list[int]]:
    u, e = m.denoiser, m.encoder
    den = [count(u.time_embed), *map(count, u.down), count(u.middle), *map(count, u.up)]
    den.append(count(u.out_norm) + count(u.out_conv))
    return den, [*map(count, e.down), count(e.middle), count(e.out_norm) + count(e.holo_head)]


def check_counts(src: Path) -> bool:
    ok = True
    for preset, (img, ch, mult, emult) in DIFFAE.items():
        with torch.device("meta"):
            theirs = blocks_theirs(diffae_model(src, img, ch, mult, emult))
            ours = blocks_ours(build(load_config(preset, ["method.name=diffae"])))
        same = theirs == ours
        ok &= same
        print(
            f"{preset:<14} denoiser {sum(ours[0]):>11,} (DiffAE {sum(theirs[0]):>11,}), "
            f"encoder {sum(ours[1]):>10,} (DiffAE {sum(theirs[1]):>10,}), "
            f"{len(ours[0]) + len(ours[1])} blocks: {'equal' if same else 'DIFFERENT'}"
        )
    return ok


def check_function(src: Path, heads: int) -> bool:
    """A small network of DiffAE's architecture (32 px), random weights, `heads` attention
    heads (DiffAE's configs use one; more checks the per-head qkv layout)."""
    torch.manual_seed(0)
    theirs = diffae_model(
        src, 32, 32, (1, 2, 2), (1, 2, 2, 2), attention_resolutions=(16, 8), num_heads=heads
    )
    for p in theirs.parameters():  # re-draw zero-initialised layers
        if p.abs().max() == 0:
            torch.nn.init.normal_(p, std=0.05)
    theirs.eval()
    sets = [
        "method.name=diffae",
        "data.resolution=32",
        "model.denoiser.base_channels=32",
        "model.denoiser.channel_mult=[1,2,2]",
        "model.denoiser.attn_resolutions=[16,8]",
        "model.encoder.base_channels=32",
        "model.encoder.channel_mult=[1,2,2,2]",
        "model.encoder.attn_resolutions=[16,8]",
        f"model.denoiser.num_heads={heads}",
        f"model.encoder.num_heads={heads}",
        "data.dataset=folder",
        "data.root=unused",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        state = {f"model.{k}": v for k, v in theirs.state_dict().items()}
        state |= {f"ema_model.{k}": v for k, v in theirs.state_dict().items()}
        torch.save({"state_dict": state, "global_step": 0}, Path(tmp) / "last.ckpt")
        cfg_path = Path(tmp) / "small.yaml"
        cfg_path.write_text((ROOT / "arcdae_fast" / "configs" / "ffhq64.yaml").read_text())
        path = convert_diffae(
            Path(tmp) / "last.ckpt",
            Path(tmp) / "run",
            config=str(cfg_path),
            overrides=sets,
            log=lambda m: None,
        )
        ckpt = torch.load(path, weights_only=False)
        ours = build(load_config(str(cfg_path), sets))
    ours.load_state_dict(ckpt["model"])
    ours.eval()
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    x_t = torch.randn(4, 3, 32, 32, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    with torch.no_grad():
        z_theirs = theirs.encode(x0)["cond"]
        z_ours = ours.encode(x0)
        pred_theirs = theirs(x_t, t, cond=z_theirs).pred
        pred_ours = ours.denoiser(x_t, t, z_theirs)

    def rel(a, b):
        return ((a - b).norm() / b.norm()).item()

    ez, ep = rel(z_ours, z_theirs), rel(pred_ours, pred_theirs)
    print(
        f"{heads} head(s): encoder z relative difference {ez:.2e} (|z| {z_theirs.norm():.3g}); "
        f"denoiser prediction {ep:.2e} (|pred| {pred_theirs.norm():.3g})"
    )
    return ez < 1e-5 and ep < 1e-5


def write_keys(src: Path, path: Path) -> None:
    with torch.device("meta"):
        d = diffae_model(src, *DIFFAE["ffhq.yaml"])
    head = (
        "# DiffAE's BeatGANs autoencoder at FFHQ-128 (phizaz/diffae 00c57d3, "
        "templates.ffhq128_autoenc_base):\n# every state-dict key of LitModel.model in order, "
        "with its shape; written by bench/diffae_fidelity.py --keys\n"
    )
    lines = [f"{k} {tuple(v.shape)}" for k, v in d.state_dict().items()]
    path.write_text(head + "\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines)} keys)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--diffae-src", type=Path, required=True, help="a checkout of phizaz/diffae")
    p.add_argument("--keys", type=Path, default=None, help="write DiffAE's FFHQ-128 key list")
    a = p.parse_args(argv)
    if not (a.diffae_src / "model" / "unet_autoenc.py").is_file():
        p.error(f"{a.diffae_src} is not a checkout of phizaz/diffae (no model/unet_autoenc.py)")
    if a.keys:
        write_keys(a.diffae_src, a.keys)
    ok = check_counts(a.diffae_src)
    for heads in (1, 4):
        ok &= check_function(a.diffae_src, heads)
    print("all equal" if ok else "DIFFERENCES FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
