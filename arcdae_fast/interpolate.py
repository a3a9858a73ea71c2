"""`python -m arcdae_fast.interpolate --run DIR --out DIR [--images A B | --split S
[--index I J]] [--n 8] [--steps S]`

Interpolates between two images as DiffAE does: slerp between their DDIM-inverted x_T, lerp
between their codes, each of the n points decoded. Writes OUT/interpolate.png (a strip: the
two originals at its ends, the n decodings between).
"""

from __future__ import annotations

import sys

import torch

from . import apps


def work(a) -> int:
    m = apps.open_model(a)
    x = apps.inputs(m, a, 2)
    if len(x) != 2:
        raise apps.errors.UserError(f"interpolate needs exactly 2 images, got {len(x)}")
    apps.say(a, f"interpolating in {a.n} points")
    strip = m.interpolate(x[0], x[1], a.n, a.steps or None)
    path = apps.save_grid(a.out / "interpolate.png", [torch.cat([x[:1], strip, x[1:]])])
    apps.say(a, f"-> {path}")
    return 0


def main(argv=None) -> int:
    p = apps.parser("interpolate", __doc__)
    p.add_argument("--n", type=int, default=8, help="points along the path (>= 2)")
    a = apps.parse(p, argv)
    if a.n < 2:
        p.error("--n must be >= 2")
    return apps.main(work, a)


if __name__ == "__main__":
    sys.exit(main())
