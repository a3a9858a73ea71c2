"""The one image decode path: file -> 8-bit RGB pixels, shared by the torch loader, the DALI
loader's checks, the prepare tool and evaluation (it imports only PIL and numpy, so the
prepare tool's spawned workers stay light).

- Refused by name before any pixel is decoded: an image of more than `max_pixels` pixels
  (`data.max_image_pixels`; PIL's own decompression-bomb check is replaced by this one).
- Converted, each checked against an independent conversion in tests/test_decode.py:
  16-bit grayscale (PIL's modes I;16*, and I from a PNG) scaled to 8 bits by round(v / 257)
  (PIL's own RGB conversion of these clips at 255: silently wrong pixels); 1-bit, 8-bit
  grayscale and palette images expanded to RGB; CMYK converted by PIL
  (R = (255 - C)(255 - K) / 255, to rounding); the alpha of RGBA / LA / PA images dropped
  (as DALI's decoder and PIL's convert do); 16-bit RGB is reduced to 8 bits by PIL on load.
- Refused by name: float images (mode F) and 32-bit integer ones other than PNG's (no
  standard range), and modes PIL cannot make RGB.
Any decode failure is an `ImageError` whose message says what is wrong with the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 100_000_000
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """This file cannot be used as an image (the message says why)."""


def open_checked(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image opened lazily (header only), refused when over `max_pixels`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own limit below
        try:
            im = Image.open(path)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"not a readable image ({type(e).__name__}: {e})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(
            f"{w} x {h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            "(data.max_image_pixels)"
        )
    return im


def to_rgb8(im: Image.Image) -> Image.Image:
    """A decoded PIL image as 8-bit RGB (see the module docstring for each mode)."""
    mode = im.mode
    if mode in SIXTEEN_BIT:
        if mode == "I" and im.format != "PNG":  # PNG's 16-bit grayscale; others: unknown range
            raise ImageError("a 32-bit integer image (mode I) has no standard pixel range")
        g = np.asarray(im).astype(np.float64) / 257.0  # 0..65535 -> 0..255
        g8 = np.clip(np.rint(g), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(g8[..., None], 3, axis=2), "RGB")
    if mode == "F":
        raise ImageError("a floating-point image (mode F) has no standard pixel range")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return im.convert("RGB")  # alpha dropped
    if mode == "P" and "transparency" in im.info:
        return im.convert("RGBA").convert("RGB")
    try:
        return im if mode == "RGB" else im.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(f"cannot convert PIL mode {mode!r} to RGB ({e})") from None


def decode(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, check the size, decode fully, convert to 8-bit RGB; ImageError otherwise."""
    im = open_checked(path, max_pixels)
    try:
        with im:
            im.load()  # the full decode: truncated or corrupt data fails here
            return to_rgb8(im)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"cannot be decoded ({type(e).__name__}: {e})") from None
