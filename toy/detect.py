"""Programmatic detectors of the shapes world: colour, shape and size read back from pixels.

No learned model: each pixel is given the nearest palette colour (or background when it is
near none), same-colour pixels are grouped into 4-connected components, and a component's
shape is read from how it fills its bounding box (square 1, circle pi/4 ~ 0.79, triangle
1/2 with most of its area in the lower half). Good enough on the world's own renders
(tests/toy/test_detect.py checks every class) and on the toy diffusion model's samples,
whose colours are flat but whose edges are soft.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from mmalign.toy.shapes import BACKGROUND, COLOURS, SHAPES, SIDES

_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _NAMES], dtype=np.float32)
#: a pixel farther than this (RGB euclidean) from every palette colour is background
MAX_DISTANCE = 90.0
#: components smaller than this are noise, not objects
MIN_PIXELS = 8
#: a box side at or above this reads as "large" (the world draws small 9-11, large 14-17)
LARGE_SIDE = (SIDES["small"][1] + SIDES["large"][0] + 1) // 2


@dataclass(frozen=True)
class Detection:
    """One object found in an image: colour, shape and size words, box and pixel count."""

    colour: str
    shape: str
    size: str
    box: tuple[int, int, int, int]
    pixels: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def colour_labels(image: Image.Image) -> np.ndarray:
    """``[H, W]`` int: the index in ``COLOURS`` of each pixel's nearest palette colour, or -1
    for background (nearer to white than to any colour, or far from all)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    dist = np.linalg.norm(pixels[:, :, None, :] - _PALETTE[None, None], axis=-1)
    background = np.linalg.norm(pixels - np.array(BACKGROUND, dtype=np.float32), axis=-1)
    labels = dist.argmin(-1)
    near = dist.min(-1)
    labels[(near > MAX_DISTANCE) | (background < near)] = -1
    return labels


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected components of a boolean mask, each as an ``[N, 2]`` array of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, cells = [start], []
        seen[start] = True
        while stack:
            y, x = stack.pop()
            cells.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append(np.array(cells))
    return out


def classify_shape(cells: np.ndarray) -> str:
    """``square``, ``circle`` or ``triangle`` from the cells of one component.

    Fill ratio ``area / box area``: at least 0.9 is a square. Otherwise a triangle (apex up)
    puts about three quarters of its area in the lower half of its box, a circle one half.
    """
    ys, xs = cells[:, 0], cells[:, 1]
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(cells) / float(height * width)
    if fill >= 0.9:
        return "square"
    middle = (ys.min() + ys.max()) / 2
    lower = float((ys > middle).sum()) / len(cells)
    return "triangle" if lower > 0.62 else "circle"


def detect(image: Image.Image, min_pixels: int = MIN_PIXELS) -> list[Detection]:
    """Every object in ``image``, largest first."""
    labels = colour_labels(image)
    found = []
    for index, colour in enumerate(_NAMES):
        for cells in components(labels == index):
            if len(cells) < min_pixels:
                continue
            ys, xs = cells[:, 0], cells[:, 1]
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            side = max(box[2] - box[0], box[3] - box[1])
            found.append(Detection(colour, classify_shape(cells), "large" if side >= LARGE_SIDE else "small",
                                   box, len(cells)))
    return sorted(found, key=lambda d: -d.pixels)


def main_object(image: Image.Image) -> Detection | None:
    """The largest object of ``image``, or None for an empty (all background) image."""
    found = detect(image)
    return found[0] if found else None


def prompt_words(prompt: str) -> dict[str, str | None]:
    """The colour, shape and size words a single-object prompt names (None where it names none)."""
    words = set(prompt.lower().replace(",", " ").split())
    pick = lambda options: next((w for w in options if w in words), None)  # noqa: E731
    return {"colour": pick(_NAMES), "shape": pick(SHAPES), "size": pick(SIDES)}
