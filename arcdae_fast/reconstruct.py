"""`python -m arcdae_fast.reconstruct --run DIR --out DIR [--images F ...| --split S
[--index I ...]] [--n 8] [--steps S] [--solver ...] [--seed S]`

Reconstructions of images (files, or the run's own dataset split): encode, then decode from
the DDIM-inverted x_T (the autoencoding) and from a random x_T. Writes OUT/reconstruct.png
(rows: originals, from the inverted x_T, from a random x_T) and OUT/reconstruct.json
(per-image MSE on [-1, 1] for both).
"""

from __future__ import annotations

import sys

import torch

from . import apps


def work(a) -> int:
    m = apps.open_model(a)
    x = apps.inputs(m, a, a.n)
    apps.say(a, f"reconstructing {len(x)} images")
    inv = m.reconstruct(x, "inverted", a.steps or None, a.solver, a.seed)
    rnd = m.reconstruct(x, "random", a.steps or None, a.solver, a.seed)
    path = apps.save_grid(a.out / "reconstruct.png", [x, inv, rnd])
    mse = {
        k: ((v - x) ** 2).flatten(1).mean(1).tolist()
        for k, v in (("inverted", inv), ("random", rnd))
    }
    apps.save_json(a.out / "reconstruct.json", {"mse": mse, "steps": m._steps(a.steps)})
    apps.say(
        a,
        f"-> {path} (MSE inverted {torch.tensor(mse['inverted']).mean():.4f}, "
        f"random {torch.tensor(mse['random']).mean():.4f})",
    )
    return 0


def main(argv=None) -> int:
    p = apps.parser("reconstruct", __doc__)
    p.add_argument("--n", type=int, default=8, help="images of the split (without --index)")
    return apps.main(work, apps.parse(p, argv))


if __name__ == "__main__":
    sys.exit(main())
