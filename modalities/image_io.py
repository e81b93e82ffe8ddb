"""Opening images for the plugins that read them (vision_language, image_diffusion).

One place names every way an image cannot be used, as a DataError with file, row and field:
bytes that do not decode, a decompression bomb (an image so large that decoding it would
exhaust memory; PIL refuses it), and an image too small to show anything (a 1x1
placeholder). The core never imports this module: it knows nothing about images.
"""
from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image, UnidentifiedImageError

#: images with a side shorter than this are refused: they carry no content to prefer
MIN_SIDE = 8


def decode_image(source: bytes | str | os.PathLike, where: Any, field: str, what: str) -> Image.Image:
    """Open and fully load ``source`` (encoded bytes or a file path), so a broken image
    fails now, named, and later reads cannot fail. ``where`` is the row's ``RowRef``;
    ``what`` names the image in messages ("image file 'a.png'", "the image bytes")."""
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        image.load()
    except Image.DecompressionBombError as exc:
        raise where.error(field, f"{what}: too large to decode safely ({exc})",
                          f"Downscale it below {Image.MAX_IMAGE_PIXELS} pixels or drop the row") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise where.error(field, f"cannot decode {what} ({type(exc).__name__}: {exc})",
                          "Replace the image with a valid PNG / JPEG / WebP file or drop the row") from exc
    check_size(image, where, field, what)
    return image


def check_size(image: Image.Image, where: Any, field: str, what: str) -> None:
    """Refuse an image with a side under :data:`MIN_SIDE` pixels: a placeholder or a broken
    thumbnail, which resizing would only blow up into a flat patch."""
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise where.error(field, f"{what}: too small to use ({width}x{height} pixels, the least is "
                          f"{MIN_SIDE}x{MIN_SIDE})", "Replace it with the full image or drop the row")
