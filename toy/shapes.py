"""The shapes world: small RGB scenes of circles, squares and triangles, deterministic by seed.

A scene is drawn on a white ``SIZE x SIZE`` canvas from a list of :class:`Shape` annotations
(class, colour, size, box). Everything here is a plain function of an integer seed, so a seed
names one scene forever: training, preference data and evaluation use disjoint seed ranges
(:data:`SPLITS`), and a held-out measurement never sees a scene the base models were trained on.

Colours are pure and far apart in RGB, shapes differ in how much of their box they fill
(square 1, circle pi/4, triangle 1/2): :mod:`mmalign.toy.detect` reads both back
from pixels without any learned model.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

SIZE = 32
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (230, 200, 20),
}
SHAPES = ("circle", "square", "triangle")
#: side of the bounding box in pixels, by size word
SIDES = {"small": (9, 11), "large": (14, 17)}
BACKGROUND = (255, 255, 255)

#: seed ranges of the world's uses; held-out measurement seeds are never trained on
SPLITS = {
    "pretrain": range(0, 1_000_000),
    "prefs": range(1_000_000, 1_100_000),
    "tune": range(2_000_000, 2_100_000),
    "heldout": range(3_000_000, 3_100_000),
}


@dataclass(frozen=True)
class Shape:
    """One object of a scene: its class, colour and size words and its box
    ``(left, top, right, bottom)`` in pixels, right / bottom exclusive."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        """The object's class as the captions and the object vocabulary say it: ``red circle``."""
        return f"{self.colour} {self.shape}"

    def to_dict(self) -> dict:
        return asdict(self)


def seed_of(split: str, index: int) -> int:
    """The world seed of scene ``index`` of ``split`` (see :data:`SPLITS`)."""
    seeds = SPLITS[split]
    if not 0 <= index < len(seeds):
        raise ValueError(f"scene index {index} is outside the {split} split (0..{len(seeds) - 1})")
    return seeds[index]


def shape_mask(shape: str, side: int) -> np.ndarray:
    """A boolean ``[side, side]`` mask of ``shape`` filling its box.

    Circle: the inscribed disc. Square: the whole box. Triangle: apex at the top centre,
    base along the bottom row, so it fills half the box.
    """
    centre = (side - 1) / 2
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "circle":
        return (x - centre) ** 2 + (y - centre) ** 2 <= (side / 2) ** 2
    if shape == "triangle":
        half_width = (y + 1) / side * side / 2  # grows linearly from the apex to the base
        return np.abs(x - centre) <= half_width
    raise ValueError(f"unknown shape {shape!r}; the world has {', '.join(SHAPES)}")


def render(objects: list[Shape]) -> Image.Image:
    """The ``SIZE x SIZE`` RGB image of ``objects``, later ones drawn over earlier ones."""
    canvas = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    for obj in objects:
        left, top, right, bottom = obj.box
        mask = shape_mask(obj.shape, right - left)
        region = canvas[top:bottom, left:right]
        region[mask] = COLOURS[obj.colour]
    return Image.fromarray(canvas, "RGB")


def place(rng: random.Random, side: int, taken: list[tuple[int, int, int, int]],
          tries: int = 50) -> tuple[int, int, int, int] | None:
    """A box of ``side`` inside the canvas that keeps a 1-pixel gap from every ``taken`` box,
    or None when ``tries`` random positions all collide."""
    for _ in range(tries):
        left, top = rng.randrange(0, SIZE - side + 1), rng.randrange(0, SIZE - side + 1)
        box = (left, top, left + side, top + side)
        if all(_apart(box, other) for other in taken):
            return box
    return None


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def random_shape(rng: random.Random, taken: list, *, shape: str | None = None, colour: str | None = None,
                 size: str | None = None) -> Shape | None:
    """A shape with the given words (random where None), placed apart from ``taken``."""
    size = size or rng.choice(list(SIDES))
    low, high = SIDES[size]
    box = place(rng, rng.randint(low, high), taken)
    if box is None:
        return None
    return Shape(shape or rng.choice(SHAPES), colour or rng.choice(list(COLOURS)), size, box)


def single_scene(seed: int, *, shape: str | None = None, colour: str | None = None,
                 size: str | None = None) -> list[Shape]:
    """One object, the words given fixed and the rest drawn from ``seed``."""
    rng = random.Random(seed)
    obj = random_shape(rng, [], shape=shape, colour=colour, size=size)
    assert obj is not None  # one box always fits an empty canvas
    return [obj]


def multi_scene(seed: int, max_objects: int = 3, classes: list[tuple[str, str]] | None = None) -> list[Shape]:
    """One to ``max_objects`` objects of distinct classes (colour, shape), drawn from ``seed``;
    ``classes`` fixes them instead. Objects that no longer fit are left out."""
    rng = random.Random(seed)
    if classes is None:
        every = [(c, s) for c in COLOURS for s in SHAPES]
        classes = rng.sample(every, rng.randint(1, max_objects))
    objects: list[Shape] = []
    for colour, shape in classes:
        obj = random_shape(rng, [o.box for o in objects], shape=shape, colour=colour, size="small")
        if obj is not None:
            objects.append(obj)
    return objects


def caption(objects: list[Shape], *, colour: bool = True, size: bool = False) -> str:
    """``a red circle and a blue square``: each object in order, with the words asked for."""
    parts = []
    for obj in objects:
        words = [w for w, keep in ((obj.size, size), (obj.colour, colour)) if keep] + [obj.shape]
        parts.append("a " + " ".join(words))
    return " and ".join(parts)


def object_names() -> list[str]:
    """Every class of the world, ``colour shape``, in a fixed order."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


#: classes that co-occur: a scene holding one often holds the other (see :func:`paired_scene`).
#: Captions learn the pairing too, which is what makes the toy LVLM name an absent partner.
PARTNERS = {
    "red circle": "blue square", "green triangle": "yellow circle", "blue triangle": "red square",
    "yellow square": "green circle", "red triangle": "green square", "blue circle": "yellow triangle",
}
PARTNERS.update({b: a for a, b in list(PARTNERS.items())})


def paired_scene(seed: int, max_objects: int = 3, together: float = 0.5) -> list[Shape]:
    """A multi-object scene where, with probability ``together``, the first object's partner
    (:data:`PARTNERS`) is in the scene too: the co-occurrence statistics of the LVLM world."""
    rng = random.Random(seed)
    names = object_names()
    first = rng.choice(names)
    chosen = [first]
    if rng.random() < together:
        chosen.append(PARTNERS[first])
    count = rng.randint(1, max_objects)
    while len(chosen) < count:
        name = rng.choice(names)
        if name not in chosen:
            chosen.append(name)
    classes = [tuple(name.split()) for name in chosen]
    objects = multi_scene(rng.randrange(1 << 30), max_objects, classes=classes)  # type: ignore[arg-type]
    return sorted(objects, key=lambda o: (o.box[0], o.box[1]))  # read left to right, as captions are
