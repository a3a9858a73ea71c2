"""The per-image work of the prepare tool, in a module that imports only PIL and numpy (with
decode.py): the tool's pool starts its workers with "spawn" (safe in processes with threads),
and each worker imports just this."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from .decode import DEFAULT_MAX_PIXELS, ImageError, decode

# DiffAE / D2C CelebA crop: 128 x 128 box centred at (89, 121) of the 178 x 218 aligned images
CELEBA_CROP_BOX = (25, 57, 153, 185)


def prepare_one(job: tuple) -> dict:
    """Validate, crop/resize and write one image; returns a manifest entry or a skip record.
    job: (src, dst, size, format, quality, celeba crop[, max pixels])."""
    src, dst, size, fmt, quality, celeba, *rest = job
    max_pixels = rest[0] if rest else DEFAULT_MAX_PIXELS
    try:
        with decode(src, max_pixels) as im:
            w, h = im.size
            if celeba:
                im = im.crop(CELEBA_CROP_BOX)
            cw, ch = im.size
            s = size / min(cw, ch)
            im = im.resize(
                (max(size, round(cw * s)), max(size, round(ch * s))),
                Image.BICUBIC,
                reducing_gap=None,
            )
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            im = im.crop((left, top, left + size, top + size))
    except ImageError as e:
        return {"skip": src, "reason": str(e)}
    except OSError as e:  # the source file itself
        return {"skip": src, "reason": f"{type(e).__name__}: {e}"}
    tmp = f"{dst}.tmp{os.getpid()}"
    try:  # a failed write is the output's fault, not the image's: raised, not skipped
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        im.save(tmp, format=fmt.upper(), quality=quality) if fmt == "jpeg" else im.save(
            tmp, format="PNG"
        )
        os.replace(tmp, dst)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), dst) from None
    st = os.stat(src)
    return {
        "src": src,
        "file": dst,
        "src_bytes": st.st_size,
        "src_mtime": st.st_mtime,
        "orig_w": w,
        "orig_h": h,
    }
