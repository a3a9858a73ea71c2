"""The bundled dataset: procedurally drawn cartoon faces with known attributes (no downloads).

`generate(root, count, size, seed)` writes a real dataset on disk in CelebA's layout so
evaluation code written for CelebA runs on it unchanged:

    root/img_align_celeba/000001.jpg ...   JPEG, size x size
    root/list_attr_celeba.txt              10 binary attributes (1 / -1), CelebA names
    root/list_factors.txt                  2 continuous factors: skin_tone, pose in [0,1]/[-1,1]
    root/list_eval_partition.txt           80 / 10 / 10 train / valid / test

Writing goes to a temporary folder renamed into place at the end, so a crash or a second
process never leaves a half-written dataset behind.
"""

from __future__ import annotations

import colorsys
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..once import exclusive
from .attrs import write_partition, write_table
from .datasets import DataError

ATTRIBUTES = [
    "Male",
    "Smiling",
    "Mouth_Slightly_Open",
    "Eyeglasses",
    "Wearing_Hat",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Mustache",
    "Narrow_Eyes",
]
FACTORS = ["skin_tone", "pose"]
IMAGE_DIR = "img_align_celeba"
MARKER = "SYNTHETIC_DATASET"

_HAIR = {"black": (25, 22, 20), "blond": (222, 190, 110), "brown": (105, 65, 35)}


def _sample(rng: np.random.Generator) -> tuple[dict[str, bool], dict[str, float], dict]:
    a = {"Male": rng.random() < 0.45}
    a["Smiling"] = rng.random() < 0.5
    a["Mouth_Slightly_Open"] = rng.random() < 0.4
    a["Eyeglasses"] = rng.random() < 0.25
    a["Wearing_Hat"] = rng.random() < 0.2
    a["Bangs"] = (not a["Wearing_Hat"]) and rng.random() < 0.35
    hair = rng.choice(["black", "blond", "brown"], p=[0.4, 0.25, 0.35])
    a["Black_Hair"], a["Blond_Hair"] = hair == "black", hair == "blond"
    a["Mustache"] = a["Male"] and rng.random() < 0.4
    a["Narrow_Eyes"] = rng.random() < 0.3
    f = {"skin_tone": float(rng.random()), "pose": float(rng.uniform(-1, 1))}
    style = {
        "hair": str(hair),
        "bg_hue": float(rng.random()),
        "shirt_hue": float(rng.random()),
        "hat_hue": float(rng.random()),
        "scale": float(rng.uniform(0.92, 1.08)),
        "dy": float(rng.uniform(-0.03, 0.03)),
    }
    return a, f, style


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))


def draw_face(
    attrs: dict[str, bool], factors: dict[str, float], style: dict, size: int
) -> Image.Image:
    """Render one face at 2x and downsample (anti-aliased)."""
    S = 2 * size
    img = Image.new("RGB", (S, S), _rgb(style["bg_hue"], 0.35, 0.85))
    d = ImageDraw.Draw(img)
    k, pose = style["scale"], factors["pose"]
    cx, cy = 0.5 * S + 0.05 * S * pose, (0.5 + style["dy"]) * S
    fw, fh = (0.23 if attrs["Male"] else 0.2) * S * k, 0.27 * S * k
    hair = _HAIR[style["hair"]]
    t = factors["skin_tone"]
    skin = tuple(int(a + (b - a) * t) for a, b in zip((250, 224, 196), (120, 78, 50)))
    shirt = _rgb(style["shirt_hue"], 0.6, 0.7)
    d.ellipse([0.5 * S - 0.36 * S, cy + 0.7 * fh, 0.5 * S + 0.36 * S, cy + 1.9 * fh], fill=shirt)
    if not attrs["Male"] and not attrs["Wearing_Hat"]:  # long hair behind the head
        d.rectangle([cx - 1.25 * fw, cy - 0.4 * fh, cx + 1.25 * fw, cy + 1.1 * fh], fill=hair)
    d.ellipse([cx - 1.12 * fw, cy - 1.18 * fh, cx + 1.12 * fw, cy + 0.55 * fh], fill=hair)
    d.rectangle([cx - 0.35 * fw, cy + 0.6 * fh, cx + 0.35 * fw, cy + 1.1 * fh], fill=skin)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    fx = cx + 0.25 * fw * pose  # facial features turn with the head
    if attrs["Bangs"]:
        d.chord(
            [cx - 1.05 * fw, cy - 1.15 * fh, cx + 1.05 * fw, cy - 0.2 * fh], 180, 360, fill=hair
        )
    if attrs["Wearing_Hat"]:
        hat = _rgb(style["hat_hue"], 0.7, 0.55)
        d.chord([cx - 1.1 * fw, cy - 1.45 * fh, cx + 1.1 * fw, cy - 0.25 * fh], 180, 360, fill=hat)
        d.rectangle([cx - 1.35 * fw, cy - 0.5 * fh, cx + 1.35 * fw, cy - 0.36 * fh], fill=hat)
    ey, ex, er = cy - 0.12 * fh, 0.42 * fw, 0.16 * fw
    for sgn in (-1, 1):
        x = fx + sgn * ex
        d.line(
            [x - er, ey - 0.25 * fh, x + er, ey - 0.3 * fh + (0.03 * fh if sgn > 0 else 0)],
            fill=hair,
            width=max(1, int(S * (0.02 if attrs["Male"] else 0.012))),
        )
        if attrs["Narrow_Eyes"]:
            d.line([x - er, ey, x + er, ey], fill=(30, 25, 25), width=max(1, int(S * 0.015)))
        else:
            d.ellipse([x - er, ey - 0.6 * er, x + er, ey + 0.6 * er], fill=(250, 250, 250))
            d.ellipse(
                [x - 0.45 * er, ey - 0.45 * er, x + 0.45 * er, ey + 0.45 * er], fill=(40, 30, 25)
            )
        if attrs["Eyeglasses"]:
            d.ellipse(
                [x - 1.6 * er, ey - 1.3 * er, x + 1.6 * er, ey + 1.3 * er],
                outline=(20, 20, 20),
                width=max(1, int(S * 0.012)),
            )
    if attrs["Eyeglasses"]:
        d.line(
            [fx - ex + 1.6 * er, ey, fx + ex - 1.6 * er, ey],
            fill=(20, 20, 20),
            width=max(1, int(S * 0.012)),
        )
    d.line(
        [fx, cy, fx - 0.08 * fw, cy + 0.22 * fh, fx + 0.05 * fw, cy + 0.24 * fh],
        fill=tuple(int(c * 0.75) for c in skin),
        width=max(1, int(S * 0.01)),
    )
    my, mw = cy + 0.5 * fh, 0.38 * fw
    lips = (150, 40, 50)
    if attrs["Mouth_Slightly_Open"] and attrs["Smiling"]:  # open smile: lower half-ellipse
        d.chord(
            [fx - mw, my - 0.1 * fh, fx + mw, my + 0.16 * fh],
            0,
            180,
            fill=(70, 15, 20),
            outline=lips,
        )
    elif attrs["Mouth_Slightly_Open"]:
        d.ellipse(
            [fx - 0.55 * mw, my - 0.06 * fh, fx + 0.55 * mw, my + 0.12 * fh],
            fill=(70, 15, 20),
            outline=lips,
        )
    elif attrs["Smiling"]:
        d.arc(
            [fx - mw, my - 0.12 * fh, fx + mw, my + 0.1 * fh],
            10,
            170,
            fill=lips,
            width=max(1, int(S * 0.015)),
        )
    else:
        d.line([fx - 0.8 * mw, my, fx + 0.8 * mw, my], fill=lips, width=max(1, int(S * 0.015)))
    if attrs["Mustache"]:
        d.polygon(
            [
                (fx - 0.9 * mw, my - 0.05 * fh),
                (fx, my - 0.16 * fh),
                (fx + 0.9 * mw, my - 0.05 * fh),
                (fx, my - 0.09 * fh),
            ],
            fill=hair,
        )
    return img.resize((size, size), Image.LANCZOS)


class ForeignFolder(DataError, FileExistsError):
    """data.root holds something else: a one-line error, and a FileExistsError."""

    def __init__(self, msg: str):
        Exception.__init__(self, msg)


def generate(
    root: str | os.PathLike, count: int = 2048, size: int = 64, seed: int = 0, quality: int = 95
) -> Path:
    """Write the dataset to `root` (see the module docstring); returns root."""
    root = Path(root)
    if (root / MARKER).is_file():
        return root
    with exclusive(root):  # every rank of a job may get here at once: one writes
        if (root / MARKER).is_file():  # written while this process waited
            return root
        return _generate(root, count, size, seed, quality)


def _generate(root: Path, count: int, size: int, seed: int, quality: int) -> Path:
    if root.exists() and any(root.iterdir()):
        raise ForeignFolder(
            f"data.root {root} exists and is not a bundled synthetic dataset; choose an "
            "empty or new folder for data.root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / IMAGE_DIR).mkdir()
        rng = np.random.default_rng(seed)
        names, attr_rows, factor_rows = [], [], []
        for i in range(count):
            a, f, style = _sample(rng)
            name = f"{i + 1:06d}.jpg"
            draw_face(a, f, style, size).save(tmp / IMAGE_DIR / name, quality=quality)
            names.append(name)
            attr_rows.append([1 if a[k] else -1 for k in ATTRIBUTES])
            factor_rows.append([f[k] for k in FACTORS])
        write_table(tmp / "list_attr_celeba.txt", ATTRIBUTES, names, np.array(attr_rows))
        write_table(tmp / "list_factors.txt", FACTORS, names, np.array(factor_rows), "{:.6f}")
        n_train, n_valid = int(0.8 * count), int(0.1 * count)
        splits = [0] * n_train + [1] * n_valid + [2] * (count - n_train - n_valid)
        write_partition(tmp / "list_eval_partition.txt", names, splits)
        (tmp / MARKER).write_text(f"count={count} size={size} seed={seed}\n")
        if root.exists():
            root.rmdir()  # empty (checked above)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / MARKER).is_file():  # not a concurrent writer that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="Write the bundled synthetic face dataset.")
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=2048)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(generate(a.out, a.count, a.size, a.seed))


if __name__ == "__main__":
    main()
