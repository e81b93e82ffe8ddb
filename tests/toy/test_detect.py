"""The programmatic detectors read back what the world drew."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mmalign.toy import detect, shapes


@pytest.mark.parametrize("colour", list(shapes.COLOURS))
@pytest.mark.parametrize("shape", shapes.SHAPES)
@pytest.mark.parametrize("size,side", [("small", 9), ("small", 11), ("large", 14), ("large", 17)])
def test_every_class_and_size_is_read_back(colour, shape, size, side):
    obj = shapes.Shape(shape, colour, size, (5, 7, 5 + side, 7 + side))
    found = detect.main_object(shapes.render([obj]))
    assert (found.colour, found.shape, found.size, found.box) == (colour, shape, size, obj.box)


def test_soft_edges_and_pixel_noise_do_not_change_the_reading():
    """A diffusion sample has blurred edges and noisy flat colours: blur (radius 0.7) plus
    Gaussian noise of sigma 12 per channel must still read as the drawn object."""
    rng = np.random.default_rng(0)
    wrong = 0
    for seed in range(120):
        obj = shapes.single_scene(seed)[0]
        soft = shapes.render([obj]).filter(ImageFilter.GaussianBlur(0.7))
        noisy = np.clip(np.asarray(soft, dtype=np.float32) + rng.normal(0, 12, (32, 32, 3)), 0, 255)
        found = detect.main_object(Image.fromarray(noisy.astype(np.uint8)))
        wrong += found is None or (found.colour, found.shape) != (obj.colour, obj.shape)
    assert wrong <= 3  # at most 2.5%: blur can round a small square's corners into a disc


def test_scenes_of_several_objects_are_read_back_exactly():
    for seed in range(150):
        objects = shapes.paired_scene(seed)
        assert sorted(d.name for d in detect.detect(shapes.render(objects))) == sorted(o.name for o in objects)


def test_blank_image_has_no_object():
    assert detect.main_object(Image.new("RGB", (32, 32), "white")) is None
    assert detect.detect(Image.new("RGB", (32, 32), (128, 128, 128))) == []  # grey is near no colour


def test_components_are_four_connected():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0, 0] = mask[1, 1] = True           # diagonal neighbours: two components
    mask[3, 1:4] = True                      # a row: one component of 3 cells
    sizes = sorted(len(c) for c in detect.components(mask))
    assert sizes == [1, 1, 3]


def test_prompt_words():
    assert detect.prompt_words("a drawing of a small circle") == {"colour": None, "shape": "circle", "size": "small"}
    assert detect.prompt_words("one large red triangle") == {"colour": "red", "shape": "triangle", "size": "large"}
