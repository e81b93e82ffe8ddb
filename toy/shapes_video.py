"""The shapes world in motion: short clips of one or two shapes sliding left, right, up or down.

A clip is a plain function of an integer seed, like a scene of :mod:`mmalign.toy.shapes`
(same colours, shapes, drawing, and seed splits :data:`~mmalign.toy.shapes.SPLITS`): each
object keeps its class and size and moves in a straight line, ``DISTANCE`` pixels from the
first frame to the last, whatever the number of frames (8 by default, up to 16), on a white
``SIZE x SIZE`` canvas. The paths of two objects never touch (their swept boxes keep a
1-pixel gap), so every frame shows every object whole and its pixels' centroid moves exactly
the annotated way.

Texts derived from the annotations:

* a caption, objects in reading order of their first position (left to right):
  ``a red circle moves left and a blue square moves up .``
* a direction question per object, ``Which way does the red circle move? Answer left,
  right, up or down.`` -> ``left``.

The planted language prior: every class has a favoured direction (:data:`PRIOR`). Training
clips move that way more often than chance (``prior_share``), and training texts about a clip
that moves another way still say the favoured direction with some probability
(:func:`noisy_direction`), as web captions repeat what usually happens rather than what is
shown. A model trained on them answers the favoured direction on clips that move against it:
the temporal counterpart of the object hallucination of the still world.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np

from mmalign.toy import shapes

SIZE = shapes.SIZE
DIRECTIONS = ("left", "right", "up", "down")
#: unit step (dx, dy) of each direction, image coordinates (y grows downwards)
STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
FRAMES = 8
MIN_FRAMES, MAX_FRAMES = 8, 16
#: frames per second the clips are written at (8 frames: one second)
FPS = 8.0
#: pixels an object travels from the first frame to the last, drawn per object
DISTANCE = (10, 12)
#: side of an object's box in pixels (smaller than the still world's: two paths must fit)
SIDE = (8, 10)

#: each class's favoured direction: what the training texts say it usually does
PRIOR: dict[str, str] = {name: DIRECTIONS[(i + i // 4) % 4] for i, name in enumerate(shapes.object_names())}

CAPTION_PROMPT = "Please describe this video in detail."
DIRECTION_QUESTION = "Which way does the {} move? Answer left, right, up or down."


@dataclass(frozen=True)
class Mover:
    """One object of a clip: its class, colour and size words, its box on the first frame
    ``(left, top, right, bottom)`` (right / bottom exclusive), its direction and how far it
    travels (pixels, first frame to last)."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]
    direction: str
    distance: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def prior(self) -> str:
        """The favoured direction of the object's class (:data:`PRIOR`)."""
        return PRIOR[self.name]

    def offset(self, t: int, frames: int) -> tuple[int, int]:
        """Pixels moved by frame ``t`` of ``frames``: evenly spaced, rounded."""
        step = round(self.distance * t / max(frames - 1, 1))
        dx, dy = STEPS[self.direction]
        return dx * step, dy * step

    def at(self, t: int, frames: int) -> shapes.Shape:
        """The object on frame ``t`` as a still-world :class:`~mmalign.toy.shapes.Shape`."""
        dx, dy = self.offset(t, frames)
        left, top, right, bottom = self.box
        return shapes.Shape(self.shape, self.colour, self.size, (left + dx, top + dy, right + dx, bottom + dy))

    def swept(self) -> tuple[int, int, int, int]:
        """The box covering the object's whole path."""
        dx, dy = STEPS[self.direction]
        left, top, right, bottom = self.box
        ex, ey = dx * self.distance, dy * self.distance
        return (left + min(ex, 0), top + min(ey, 0), right + max(ex, 0), bottom + max(ey, 0))

    def to_dict(self) -> dict:
        return {**asdict(self), "name": self.name}


@dataclass(frozen=True)
class MovingScene:
    """A clip's annotations: its objects in caption order and its length in frames."""

    objects: tuple[Mover, ...]
    frames: int

    def to_dict(self) -> dict:
        return {"frames": self.frames, "objects": [o.to_dict() for o in self.objects]}


def _place_path(rng: random.Random, side: int, direction: str, distance: int,
                taken: list[tuple[int, int, int, int]], tries: int = 60) -> tuple[int, int, int, int] | None:
    """A first-frame box whose whole path stays on the canvas and apart from ``taken`` paths."""
    dx, dy = STEPS[direction]
    width, height = side + abs(dx) * distance, side + abs(dy) * distance
    for _ in range(tries):
        x, y = rng.randrange(0, SIZE - width + 1), rng.randrange(0, SIZE - height + 1)
        sweep = (x, y, x + width, y + height)
        if all(shapes._apart(sweep, other) for other in taken):
            left = x + (distance if dx < 0 else 0)
            top = y + (distance if dy < 0 else 0)
            return (left, top, left + side, top + side)
    return None


def moving_scene(seed: int, frames: int = FRAMES, max_objects: int = 2, prior_share: float = 0.25) -> MovingScene:
    """One or two objects of distinct classes, each moving its favoured direction with
    probability ``prior_share`` (else one of the three others, at random). ``0.25`` makes
    every direction equally likely (the held-out clips); training clips use more."""
    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be in {MIN_FRAMES}..{MAX_FRAMES}, got {frames}")
    rng = random.Random(seed)
    names = rng.sample(shapes.object_names(), rng.randint(1, max_objects))
    movers: list[Mover] = []
    for name in names:
        colour, shape = name.split()
        favoured = PRIOR[name]
        if rng.random() < prior_share:
            direction = favoured
        else:
            direction = rng.choice([d for d in DIRECTIONS if d != favoured])
        side, distance = rng.randint(*SIDE), rng.randint(*DISTANCE)
        box = _place_path(rng, side, direction, distance, [m.swept() for m in movers])
        if box is not None:  # a second path that does not fit is left out
            movers.append(Mover(shape, colour, "small", box, direction, distance))
    movers.sort(key=lambda m: (m.box[0], m.box[1]))  # read left to right, as captions are
    return MovingScene(tuple(movers), frames)


def render_clip(scene: MovingScene) -> np.ndarray:
    """The clip's uint8 RGB frames ``[T, SIZE, SIZE, 3]``."""
    return np.stack([np.asarray(shapes.render([m.at(t, scene.frames) for m in scene.objects]))
                     for t in range(scene.frames)])


def clip(seed: int, frames: int = FRAMES, **kwargs) -> tuple[MovingScene, np.ndarray]:
    """The annotations and frames of clip ``seed``."""
    scene = moving_scene(seed, frames, **kwargs)
    return scene, render_clip(scene)


def write_clip(scene: MovingScene, path, fps: float = FPS) -> None:
    """Write the clip as H.264 MP4 (what the vision_language modality reads)."""
    from mmalign.modalities.video_io import write_mp4

    write_mp4(render_clip(scene), path, fps=fps)


# -- texts ------------------------------------------------------------------------------------
def caption(scene: MovingScene, directions: list[str] | None = None) -> str:
    """``a red circle moves left and a blue square moves up .``; ``directions`` replaces the
    true ones (a noisy training caption)."""
    directions = directions or [m.direction for m in scene.objects]
    return " and ".join(f"a {m.name} moves {d}" for m, d in zip(scene.objects, directions)) + " ."


def direction_question(mover: Mover) -> str:
    return DIRECTION_QUESTION.format(mover.name)


def questions(scene: MovingScene) -> list[tuple[str, str]]:
    """One direction question per object, with its true answer."""
    return [(direction_question(m), m.direction) for m in scene.objects]


def against_prior(mover: Mover) -> bool:
    """Whether the object moves another way than its class's favoured direction."""
    return mover.direction != mover.prior


def noisy_direction(mover: Mover, rng: random.Random, prior_rate: float) -> str:
    """The direction a training text says: the favoured one with probability ``prior_rate``
    when the object moves against it, else the true one."""
    if against_prior(mover) and rng.random() < prior_rate:
        return mover.prior
    return mover.direction


# -- reading texts back -----------------------------------------------------------------------
def parse_direction(answer: str) -> str | None:
    """The first direction word of an answer, or None."""
    for word in answer.lower().replace(".", " ").replace(",", " ").split():
        if word in DIRECTIONS:
            return word
    return None


def parse_caption(text: str) -> list[tuple[str, str | None]]:
    """``(object, direction or None)`` for each known object a caption names, in order:
    ``a red circle moves left and ...`` -> ``[("red circle", "left"), ...]``."""
    words = text.lower().replace(".", " ").replace(",", " ").split()
    found: list[tuple[str, str | None]] = []
    colours, kinds = set(shapes.COLOURS), set(shapes.SHAPES)
    for i in range(len(words) - 1):
        if words[i] in colours and words[i + 1] in kinds:
            direction = None
            for word in words[i + 2:]:
                if word in colours:
                    break
                if word in DIRECTIONS:
                    direction = word
                    break
            found.append((f"{words[i]} {words[i + 1]}", direction))
    return found
