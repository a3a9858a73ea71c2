"""CelebA-HQ with its 40 attributes (CelebAMask-HQ's layout); no official split."""

from __future__ import annotations

from pathlib import Path

from ...config.schema import DataConfig
from ..attrs import AnnotationError, read_table
from ..datasets import DataError, ImageDataset, list_images
from ..layout import register, root_of

CELEBAHQ_HELP = (
    "CelebA-HQ is not downloaded automatically. Get CelebAMask-HQ "
    "(https://github.com/switchablenorms/CelebAMask-HQ) and lay it out as "
    "ROOT/CelebA-HQ-img/<n>.jpg and ROOT/CelebAMask-HQ-attribute-anno.txt, then set "
    "data.root=ROOT."
)


@register("celebahq", help=CELEBAHQ_HELP)
def celebahq(cfg: DataConfig) -> ImageDataset:
    return celebahq_format(root_of(cfg, CELEBAHQ_HELP), cfg.resolution)


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
