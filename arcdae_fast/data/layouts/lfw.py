"""LFW with Kumar et al.'s 73 continuous attributes (lfw_attributes.txt); no official
split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config.schema import DataConfig
from ..datasets import DataError, ImageDataset
from ..layout import register, root_of

LFW_HELP = (
    "LFW is not downloaded automatically. Get the images (http://vis-www.cs.umass.edu/lfw/, "
    "lfw.tgz or lfw-deepfunneled.tgz) and the attributes (lfw_attributes.txt, "
    "https://www.cs.columbia.edu/CAVE/databases/pubfig/download/) and lay them out as "
    "ROOT/lfw/<Person_Name>/<Person_Name>_<nnnn>.jpg (or ROOT/lfw-deepfunneled/...) and "
    "ROOT/lfw_attributes.txt, then set data.root=ROOT."
)


@register("lfw", help=LFW_HELP)
def lfw(cfg: DataConfig) -> ImageDataset:
    return lfw_format(root_of(cfg, LFW_HELP), cfg.resolution)


def read_lfw_attributes(path: Path) -> tuple[list[str], list[tuple[str, int]], np.ndarray]:
    """lfw_attributes.txt: a comment line, a header '#\\tperson\\timagenum\\t<73 names>',
    then tab-separated rows 'Person Name<TAB>n<TAB>73 values'."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"attribute file {path} does not exist. {LFW_HELP}")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    header = next((ln for ln in lines if ln.startswith("#") and "person" in ln), None)
    if header is None:
        raise DataError(f"{path}: no header line '#<TAB>person<TAB>imagenum<TAB>...'")
    names = [c for c in header.lstrip("#").split("\t") if c.strip()][2:]
    keys, values = [], []
    for n, ln in enumerate(lines, start=1):
        if ln.startswith("#"):
            continue
        parts = ln.split("\t")
        if len(parts) != len(names) + 2:
            raise DataError(f"{path}: line {n} has {len(parts) - 2} values, expected {len(names)}")
        try:
            keys.append((parts[0], int(parts[1])))
            values.append([float(v) for v in parts[2:]])
        except ValueError:
            raise DataError(f"{path}: line {n} has a non-numeric value") from None
    if not keys:
        raise DataError(f"{path} lists no images")
    return names, keys, np.asarray(values, dtype=np.float32)


def lfw_format(root: Path, resolution: int) -> ImageDataset:
    root = Path(root)
    names, keys, values = read_lfw_attributes(root / "lfw_attributes.txt")
    img_dir = next((root / d for d in ("lfw", "lfw-deepfunneled") if (root / d).is_dir()), None)
    if img_dir is None:
        folders = f"{root / 'lfw'} or {root / 'lfw-deepfunneled'}"
        raise DataError(f"expected the folder {folders}. {LFW_HELP}")
    files = []
    for person, num in keys:
        folder = person.replace(" ", "_")
        files.append(img_dir / folder / f"{folder}_{num:04d}.jpg")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} image(s) of lfw_attributes.txt are missing under {img_dir}, e.g. "
            f"{[str(m) for m in missing[:3]]}"
        )
    return ImageDataset(files, resolution, factors=values, factor_names=names)
