"""Opening images given as paths, bytes or PIL images, and corrupting them for mDPO.

Every failure is a :class:`~mmalign.errors.DataError` naming file, row and field (decoding,
decompression bombs and too-small images are checked by :mod:`mmalign.modalities.image_io`,
shared with image_diffusion); RGBA, palette and grayscale images are converted to RGB and
counted, not refused.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any

import torch
from PIL import Image

from mmalign.data.io import RowRef
from mmalign.modalities.image_io import decode_image

#: an image as rows give it: a path (absolute, or relative to the data file), raw bytes, a
#: ``datasets`` Image feature dict ``{"bytes": ..., "path": ...}`` or a PIL image
ImageSource = Any


def open_image(source: ImageSource, where: RowRef, field: str, repairs: Counter | None = None) -> Image.Image:
    """Decode ``source`` to an RGB PIL image (fully loaded, so later reads cannot fail)."""
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
    if isinstance(source, Image.Image):  # made by code (augmentations), not read from data
        image = source
    elif isinstance(source, (bytes, bytearray)):
        image = decode_image(bytes(source), where, field, "these image bytes")
    elif isinstance(source, (str, os.PathLike)) and str(source):
        path = resolve_path(str(source), where)
        if not os.path.isfile(path):
            raise where.error(field, f"image file '{path}' does not exist",
                              "Fix the path (relative paths are read from the data file's folder)")
        image = decode_image(path, where, field, f"image file '{path}'")
    else:
        raise where.error(field, f"is not an image (got {type(source).__name__})",
                          "Give a path, image bytes or a datasets Image value")
    if image.mode != "RGB":
        if repairs is not None:
            repairs[f"repaired: {image.mode} to RGB"] += 1
        image = image.convert("RGB")
    return image


def resolve_path(path: str, where: RowRef) -> str:
    """Relative image paths are read from the folder of the data file that names them."""
    if os.path.isabs(path):
        return path
    return os.path.join(os.path.dirname(os.path.abspath(where.file)), path)


def corrupt_image(image: Image.Image, generator: torch.Generator, mode: str = "crop",
                  keep: tuple[float, float] = (0.05, 0.2)) -> Image.Image:
    """An image that no longer supports the answer, for mDPO's conditional preference.

    mDPO (Wang et al. 2024, arXiv:2406.11839, section 3.1) builds the rejected image by
    keeping a small random crop of the original; ``mode="crop"`` keeps a crop whose area is a
    fraction ``u ~ U(keep)`` of the image (the processor resizes it back). ``mode="mask"``
    instead greys out a random ``1 - u`` of an 8x8 grid of cells, like masking visual tokens
    in mDPO's released trainer. All randomness comes from ``generator`` (one per row).
    """
    low, high = keep
    fraction = low + (high - low) * float(torch.rand((), generator=generator))
    width, height = image.size
    if mode == "crop":
        side = fraction ** 0.5  # same aspect ratio, area fraction `fraction`
        crop_w, crop_h = max(1, round(width * side)), max(1, round(height * side))
        left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
        top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
        return image.crop((left, top, left + crop_w, top + crop_h))
    grid = 8
    cells = torch.randperm(grid * grid, generator=generator)[: round((1 - fraction) * grid * grid)]
    out = image.copy()
    grey = Image.new("RGB", (1, 1), (127, 127, 127))
    for cell in cells.tolist():
        row, col = divmod(cell, grid)
        box = (col * width // grid, row * height // grid, (col + 1) * width // grid, (row + 1) * height // grid)
        if box[2] > box[0] and box[3] > box[1]:
            out.paste(grey.resize((box[2] - box[0], box[3] - box[1])), box)
    return out
