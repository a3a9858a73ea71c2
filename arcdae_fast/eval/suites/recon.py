"""`recon`: MSE, PSNR, SSIM and LPIPS of the decodings from the DDIM-inverted and from a
random x_T (eval.recon_steps steps) against the images."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from ...errors import doing
from ...nn.lpips import LPIPS
from ...nn.weights import WeightsError
from ...viz import to_grid
from ..context import STARTS, Evaluator, ssim
from ..registry import register
from ..report import Page, fmt

LPIPS_MIN = 32  # AlexNet's pooling needs images of at least 32 px


def _flat(r: dict) -> dict:
    return {
        f"eval_recon_{k}_{s}": r[s][k]
        for s in STARTS
        for k in ("mse", "psnr", "ssim", "lpips")
        if r[s][k] is not None
    }


def lpips_missing(ev: Evaluator) -> str | None:
    """Why LPIPS cannot be computed here (None: it can): said before any decoding."""
    if ev.cfg.data.resolution < LPIPS_MIN:
        return None  # a documented limit, reported in the result, not a missing file
    try:
        for f in LPIPS("alex").files:
            f.find(ev.ec.weights_dir)
    except WeightsError as e:
        return f"LPIPS not computed: {e}"
    return None


def _report(r: dict, page: Page) -> list[str]:
    md = [
        "",
        f"{r['images']} images, {r['steps']} DDIM steps",
        "",
        "| x_T | MSE | PSNR | SSIM | LPIPS |",
        "|---|---|---|---|---|",
    ]
    for start in ("inverted", "random"):
        v = r[start]
        cells = (fmt(v[k]) for k in ("mse", "psnr", "ssim", "lpips"))
        md.append(f"| {start} | " + " | ".join(cells) + " |")
    if r.get("lpips_note"):
        md += ["", f"LPIPS not computed: {r['lpips_note']}"]
    if page.recon_rows is not None:
        path = page.out / "recon.png"
        with doing("write the reconstruction grid", path):
            to_grid(page.recon_rows).save(path)
        page.paths.append(path)
        md += [
            "",
            "Rows: originals; from the inverted x_T; from a random x_T.",
            "",
            "![reconstructions](recon.png)",
        ]
    return md


@register(
    "recon",
    "reconstruction: MSE, PSNR, SSIM, LPIPS from the inverted and a random x_T",
    flat=_flat,
    warns=lpips_missing,
    lines=lambda r: [
        "recon: "
        + "; ".join(
            f"{s}: MSE {r[s]['mse']:.5f} PSNR {r[s]['psnr']:.2f} SSIM {r[s]['ssim']:.4f}"
            for s in STARTS
        )
    ],
    report=_report,
)
def recon(ev: Evaluator) -> dict:
    r = ev.reconstructions()
    x = ((r.originals + 1) / 2).numpy()
    lpips, lpips_note = None, None
    if r.originals.shape[-1] < LPIPS_MIN:
        lpips_note = "LPIPS needs images of at least 32 px (AlexNet's pooling)"
    else:
        try:
            lpips = LPIPS.from_files(ev.ec.weights_dir)
        except WeightsError as e:
            lpips_note = str(e)
    out: dict[str, Any] = {"images": len(x), "steps": r.steps}
    for s in STARTS:
        y = ((r.decoded[s] + 1) / 2).numpy()
        mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
        with np.errstate(divide="ignore"):  # identical images: inf, capped below
            psnr = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y)]
        res = {
            "mse": float(mse.mean()),
            "psnr": float(np.mean(np.minimum(psnr, 100.0))),  # identical images: 100 dB
            "ssim": float(np.mean(ssim(x, y))),
            "lpips": None,
        }
        if lpips is not None:
            res["lpips"] = float(_batched(lpips, r.originals, r.decoded[s]).mean())
        out[s] = res
    if lpips_note:
        out["lpips_note"] = lpips_note
    return out


def _batched(lpips: LPIPS, a: torch.Tensor, b: torch.Tensor, n: int = 64) -> torch.Tensor:
    return torch.cat([lpips(a[i : i + n], b[i : i + n]) for i in range(0, len(a), n)])
