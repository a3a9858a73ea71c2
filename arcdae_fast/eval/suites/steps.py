"""`steps`: quality against the number of decoding steps (eval.steps_grid). Each image's code
is decoded from one random x_T with s steps: MSE and SSIM to the image, and MSE to the
eval.recon_steps-step decoding of the same code and x_T (how far s steps are from the
converged decoding). A method with a prior (sample_prior: DMZ) also decodes codes drawn from
it: their FID against the split when the Inception weights are present, and always their MSE
to the converged decoding of the same prior code and x_T."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import doing
from ..codes import batches
from ..context import Evaluator, SuiteUnavailable, mse, ssim
from ..registry import register
from ..report import Page, fmt


def _report(r: dict, page: Page) -> list[str]:
    """One row per decoding step count, and the plot steps.png."""
    prior = r["prior"]
    head = "| steps | MSE | SSIM | MSE to converged |" + (
        " prior: MSE to converged | prior: FID |" if prior else ""
    )
    md = [
        "",
        f"{r['images']} images, one random x_T each; converged = {r['converged_steps']} steps",
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for n, v in r["steps"].items():
        row = f"| {n} | {fmt(v['mse'])} | {fmt(v['ssim'])} | {fmt(v['mse_to_converged'])} |"
        if prior:
            row += f" {fmt(v['prior_mse_to_converged'])} | {fmt(v.get('prior_fid'))} |"
        md.append(row)
    if r.get("fid_note"):
        md += ["", r["fid_note"]]
    _plot(page.out / "steps.png", r, page.method)
    page.paths.append(page.out / "steps.png")
    return [*md, "", "![quality against decoding steps](steps.png)"]


def _plot(path, r: dict, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [int(n) for n in r["steps"]]
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, key, label in ((axes[0], "mse", "MSE to the image"), (axes[1], "ssim", "SSIM")):
        ax.plot(steps, [v[key] for v in r["steps"].values()], "o-", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("decoding steps")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with doing("write the plot", path):
        fig.savefig(path, dpi=110)
    plt.close(fig)


@register(
    "steps",
    "few-step decoding: MSE / SSIM against the number of DDIM steps",
    flat=lambda r: {f"eval_steps{n}_mse": v["mse"] for n, v in r["steps"].items()},
    lines=lambda r: [
        "steps: "
        + "; ".join(f"{n}: MSE {v['mse']:.5f} SSIM {v['ssim']:.4f}" for n, v in r["steps"].items())
    ],
    report=_report,
)
def steps(ev: Evaluator) -> dict:
    ref_steps = ev.recon_steps or ev.ec.recon_steps
    ds = ev.eval_images()
    g = torch.Generator(device=ev.device).manual_seed(ev.ec.seed)
    prior = getattr(ev.method, "sample_prior", None)
    grid = list(ev.ec.steps_grid)
    acc = {
        n: {"mse": [], "ssim": [], "mse_to_converged": [], "prior": [], "prior_mse": []}
        for n in grid
    }
    originals = []
    for batch in batches(ds, ev.ec.batch_size, "decoding at each step count", ev.progress):
        x0 = batch["image"].to(ev.device)
        z = ev.method.encode(x0, ev.nets)
        x_T = torch.randn(x0.shape, generator=g, device=ev.device)
        codes = {"data": z}
        if prior is not None:
            codes["prior"] = prior(len(x0), g, ev.device)
        conv = {k: ev.decode(c, x_T, ref_steps) for k, c in codes.items()}
        x = ((x0.float().cpu() + 1) / 2).numpy()
        originals.append(x0.float().cpu())
        for n in grid:
            y = ev.decode(z, x_T, n)
            yn = ((y + 1) / 2).numpy()
            acc[n]["mse"] += list(((x - yn) ** 2).reshape(len(x), -1).mean(1))
            acc[n]["ssim"] += ssim(x, yn)
            acc[n]["mse_to_converged"] += list(mse(y, conv["data"]))
            if prior is not None:
                p = ev.decode(codes["prior"], x_T, n)
                acc[n]["prior"].append(p)
                acc[n]["prior_mse"] += list(mse(p, conv["prior"]))
    rows, fid_note, feats = {}, None, None
    if prior is not None:
        try:
            feats = ev.inception()
        except SuiteUnavailable as e:
            fid_note = f"sample FID not computed: {e}"
    for n in grid:
        a = acc[n]
        row = {k: float(np.mean(a[k])) for k in ("mse", "ssim", "mse_to_converged")}
        if prior is not None:
            row["prior_mse_to_converged"] = float(np.mean(a["prior_mse"]))
            if feats is not None:
                row["prior_fid"] = ev.fid_against(
                    torch.cat(originals), torch.cat(a["prior"]), feats
                )
        rows[str(n)] = row
    out = {
        "images": len(ds),
        "converged_steps": ref_steps,
        "steps": rows,
        "prior": prior is not None,
    }
    if fid_note:
        out["fid_note"] = fid_note
    return out
