"""Annotated face datasets for evaluation (and training): CelebA-HQ with its 40 attributes
(CelebAMask-HQ's layout) and LFW with Kumar et al.'s 73 continuous attributes. Neither has an
official train/valid/test split; evaluation splits them with a seed (arcdae_fast/eval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .attrs import AnnotationError, read_table
from .datasets import DataError, ImageDataset, list_images

CELEBAHQ_HELP = (
    "CelebA-HQ is not downloaded automatically. Get CelebAMask-HQ "
    "(https://github.com/switchablenorms/CelebAMask-HQ) and lay it out as "
    "ROOT/CelebA-HQ-img/<n>.jpg and ROOT/CelebAMask-HQ-attribute-anno.txt, then set "
    "data.root=ROOT."
)
LFW_HELP = (
    "LFW is not downloaded automatically. Get the images (http://vis-www.cs.umass.edu/lfw/, "
    "lfw.tgz or lfw-deepfunneled.tgz) and the attributes (lfw_attributes.txt, "
    "https://www.cs.columbia.edu/CAVE/databases/pubfig/download/) and lay them out as "
    "ROOT/lfw/<Person_Name>/<Person_Name>_<nnnn>.jpg (or ROOT/lfw-deepfunneled/...) and "
    "ROOT/lfw_attributes.txt, then set data.root=ROOT."
)


def celebahq_format(root: Path, resolution: int) -> ImageDataset:
    img_dir, anno = Path(root) / "CelebA-HQ-img", Path(root) / "CelebAMask-HQ-attribute-anno.txt"
    if not img_dir.is_dir():
        raise DataError(f"expected the folder {img_dir}. {CELEBAHQ_HELP}")
    present = {p.name for p in list_images(img_dir, CELEBAHQ_HELP)}
    try:
        names, files, attrs = read_table(anno)
    except AnnotationError as e:
        raise DataError(f"{e}. {CELEBAHQ_HELP}") from None
    missing = [f for f in files if f not in present]
    if missing:
        raise DataError(
            f"{anno} lists {len(missing)} image(s) not in {img_dir}, e.g. {missing[:3]}: the "
            "attribute file does not match the images"
        )
    return ImageDataset([img_dir / f for f in files], resolution, attrs=attrs, attr_names=names)


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
