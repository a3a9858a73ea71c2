"""`python -m arcdae_fast.sample --run DIR --out DIR [--n 16] [--steps S] [--latent-steps L]
[--solver ddim|dpm++2m|heun] [--seed S] [--batch-size B] [--per-row K] [--latent FILE]`

Unconditional samples of a trained model: codes from the method's prior (DMZ) or from the
run's latent DDIM (`python -m arcdae_fast.train_latent --run DIR` first), x_T ~ N(0, I),
decoded. Writes OUT/samples.png (a grid, --per-row images a row) and OUT/sample_NNNN.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from . import apps
from . import log as logs


def work(a) -> int:
    m = apps.open_model(a)
    out = []
    for lo in tqdm(
        range(0, a.n, a.batch_size), disable=not logs.bars(a.no_progress), desc="sample"
    ):
        k = min(a.batch_size, a.n - lo)
        out.append(m.sample(k, a.steps or None, a.seed + lo, a.latent_steps, a.solver))
    x = torch.cat(out)
    for i, img in enumerate(x):
        apps.save_grid(a.out / f"sample_{i:04d}.png", [img[None]])
    rows = [x[i : i + a.per_row] for i in range(0, len(x), a.per_row)]
    if len(rows) > 1 and len(rows[-1]) < a.per_row:
        rows[-1] = torch.cat([rows[-1], -torch.ones_like(rows[0][: a.per_row - len(rows[-1])])])
    path = apps.save_grid(a.out / "samples.png", rows)
    apps.say(a, f"{len(x)} samples -> {path}")
    return 0


def main(argv=None) -> int:
    p = apps.parser("sample", __doc__, images=False)
    p.add_argument("--n", type=int, default=16, help="how many images")
    p.add_argument("--latent", type=Path, default=None, help="default: RUN/latent/latent.pt")
    p.add_argument("--latent-steps", type=int, default=None, help="latent DDIM steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--per-row", type=int, default=8)
    a = apps.parse(p, argv)
    if min(a.n, a.batch_size, a.per_row) < 1:
        p.error("--n, --batch-size and --per-row must be >= 1")
    return apps.main(work, a)


if __name__ == "__main__":
    sys.exit(main())
