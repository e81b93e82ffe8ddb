"""Decoding, repairing and the shared resize / crop / flip of an image pair."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmalign.data.io import RowRef
from mmalign.modalities.image_io import decode_image


def image_bytes(value: Any, where: RowRef, field: str) -> bytes:
    """The encoded bytes of an image cell: raw bytes, a ``{"bytes", "path"}`` dict as
    ``datasets`` stores images, or a path (relative paths are taken from the data file's folder)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value:
        path = Path(value)
        if not path.is_absolute():
            path = Path(where.file).parent / path
        if not path.is_file():
            raise where.error(field, f"image file {str(path)!r} does not exist",
                              "Fix the path (relative paths are read from the data file's folder)")
        return path.read_bytes()
    raise where.error(field, f"expected image bytes or a path, got {type(value).__name__}",
                      "Store the image as encoded bytes (PNG/JPEG) or as a file path")


def decode_rgb(data: bytes, where: RowRef, field: str) -> tuple[Image.Image, str | None]:
    """Decode image bytes to RGB; return ``(image, mode it was repaired from, or None)``.

    Undecodable bytes, decompression bombs and tiny images are refused (shared with the
    vision-language modality, :mod:`mmalign.modalities.image_io`). Repaired, not refused:
    RGBA and LA are composited on white (dropping alpha would turn transparent areas to
    whatever colour they hold), grayscale and palette images converted.
    """
    image = decode_image(data, where, field, "the image bytes")
    if image.mode == "RGB":
        return image, None
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), image.mode
    return image.convert("RGB"), image.mode


def resize_short_side(image: Image.Image, resolution: int) -> Image.Image:
    """Resize so the shorter side is ``resolution`` (bilinear, as the SD training scripts)."""
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    return image.resize(size, Image.BILINEAR) if size != (w, h) else image


def crop_top_left(size: tuple[int, int], resolution: int, where: tuple[float, float]) -> tuple[int, int]:
    """``(top, left)`` of a ``resolution`` square in an image of ``size=(w, h)``.

    ``where`` are fractions in [0, 1] of the free room; ``(0.5, 0.5)`` is torchvision's
    center crop (``round((h - res) / 2)``).
    """
    w, h = size
    return int(round(where[0] * (h - resolution))), int(round(where[1] * (w - resolution)))


def pair_pixels(images: list[Image.Image], resolution: int, crop: tuple[float, float],
                flip: bool) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """The identical resize / crop / flip of the images of one pair, as ``[S, 3, R, R]`` in
    [-1, 1], with the original size ``(h, w)`` and the crop's ``(top, left)`` (SDXL time ids).

    The rejected image is first brought to the chosen one's size when they differ, so one
    crop box means the same region in both.
    """
    first = images[0]
    original = (first.height, first.width)
    same = [im if im.size == first.size else im.resize(first.size, Image.BILINEAR) for im in images]
    resized = [resize_short_side(im, resolution) for im in same]
    top, left = crop_top_left(resized[0].size, resolution, crop)
    out = []
    for im in resized:
        arr = np.asarray(im.crop((left, top, left + resolution, top + resolution)), dtype=np.float32)
        tensor = torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0
        out.append(tensor.flip(-1) if flip else tensor)
    return torch.stack(out), original, (top, left)


def center_square(image: Image.Image, resolution: int) -> Image.Image:
    """The center ``resolution`` square of ``image`` after resizing its short side, as the
    training crop (``crop: center``) takes it: the start image of img2img sampling."""
    resized = resize_short_side(image.convert("RGB"), resolution)
    top, left = crop_top_left(resized.size, resolution, (0.5, 0.5))
    return resized.crop((left, top, left + resolution, top + resolution))
