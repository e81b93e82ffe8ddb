"""The shapes world: deterministic scenes, the geometry of each shape, disjoint seed splits."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mmalign.toy import shapes


def test_same_seed_same_scene_and_pixels():
    a, b = shapes.paired_scene(123), shapes.paired_scene(123)
    assert a == b
    np.testing.assert_array_equal(np.asarray(shapes.render(a)), np.asarray(shapes.render(b)))
    assert shapes.single_scene(7) != shapes.single_scene(8)


@pytest.mark.parametrize("side", [9, 14, 17])
def test_shape_masks_fill_their_box_as_geometry_says(side):
    """Square: the whole box. Disc of diameter ``side``: area pi/4 side^2, off by the boundary
    pixels, O(perimeter) = O(side), so by O(1/side) in fill. Triangle with base ``side`` and
    height ``side``: side^2 / 2, off by O(side) pixels along its two slanted edges."""
    area = side * side
    assert shape_fill("square", side) == 1.0
    assert abs(shape_fill("circle", side) - math.pi / 4) < 2.5 / side  # boundary pixels: O(perimeter / area)
    assert abs(shape_fill("triangle", side) - 0.5) < 1.5 / side
    assert shapes.shape_mask("triangle", side)[0].sum() < shapes.shape_mask("triangle", side)[-1].sum()
    assert area == shapes.shape_mask("square", side).size


def shape_fill(shape: str, side: int) -> float:
    return float(shapes.shape_mask(shape, side).mean())


def test_render_paints_the_box_and_leaves_the_rest_white():
    obj = shapes.Shape("circle", "blue", "large", (4, 6, 20, 22))
    pixels = np.asarray(shapes.render([obj]))
    assert tuple(pixels[14, 12]) == shapes.COLOURS["blue"]          # the box centre (y=6+8, x=4+8)
    assert tuple(pixels[6, 4]) == shapes.BACKGROUND                  # the disc misses the box corner
    assert tuple(pixels[0, 31]) == shapes.BACKGROUND
    assert (pixels != shapes.BACKGROUND).any(-1).sum() == shapes.shape_mask("circle", 16).sum()


def test_multi_object_scenes_keep_objects_apart_and_distinct():
    for seed in range(200):
        objects = shapes.paired_scene(seed)
        assert 1 <= len(objects) <= 3
        assert len({o.name for o in objects}) == len(objects)
        boxes = [o.box for o in objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert shapes._apart(a, b)


def test_partners_co_occur_more_than_chance():
    """With probability 1/2 the first object's partner joins; otherwise a random pick of the
    other 11 classes adds it with probability at most 2/11. So P(partner present) >= 1/2."""
    hits = 0
    for seed in range(400):
        names = [o.name for o in shapes.paired_scene(seed)]
        hits += any(shapes.PARTNERS[n] in names for n in names)
    assert hits / 400 > 0.45
    assert all(shapes.PARTNERS[shapes.PARTNERS[n]] == n for n in shapes.object_names())


def test_splits_are_disjoint_and_indexable():
    ranges = list(shapes.SPLITS.values())
    for i, a in enumerate(ranges):
        for b in ranges[i + 1:]:
            assert a.stop <= b.start or b.stop <= a.start
    assert shapes.seed_of("heldout", 0) == shapes.SPLITS["heldout"].start
    with pytest.raises(ValueError):
        shapes.seed_of("tune", len(shapes.SPLITS["tune"]))


def test_caption_names_the_words_asked_for():
    objects = [shapes.Shape("circle", "red", "small", (0, 0, 9, 9)),
               shapes.Shape("square", "blue", "large", (12, 12, 26, 26))]
    assert shapes.caption(objects) == "a red circle and a blue square"
    assert shapes.caption(objects, colour=False, size=True) == "a small circle and a large square"
