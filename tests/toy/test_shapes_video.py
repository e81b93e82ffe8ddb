"""The moving-shapes world: deterministic clips, objects that really move the annotated way,
texts that agree with the annotations, and the planted direction prior."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from mmalign.toy import shapes, shapes_video as sv


def test_same_seed_same_clip_and_pixels():
    a, frames_a = sv.clip(123)
    b, frames_b = sv.clip(123)
    assert a == b
    np.testing.assert_array_equal(frames_a, frames_b)
    assert sv.moving_scene(7) != sv.moving_scene(8)


@pytest.mark.parametrize("frames", [8, 12, 16])
def test_frames_shape_and_dtype(frames):
    scene, pixels = sv.clip(5, frames)
    assert pixels.shape == (frames, sv.SIZE, sv.SIZE, 3)
    assert pixels.dtype == np.uint8
    assert scene.frames == frames


@pytest.mark.parametrize("frames", [4, 7, 17])
def test_lengths_outside_the_world_are_refused(frames):
    with pytest.raises(ValueError, match="frames"):
        sv.moving_scene(0, frames)


def centroid(pixels: np.ndarray, colour: str, shape_box_mask: np.ndarray | None = None) -> np.ndarray:
    """(x, y) centroid of the pixels of ``colour`` in one frame."""
    ys, xs = np.nonzero(np.all(pixels == np.array(shapes.COLOURS[colour], dtype=np.uint8), axis=-1)
                        & (shape_box_mask if shape_box_mask is not None else True))
    assert len(xs), f"no {colour} pixels"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("seed", range(40))
def test_each_object_moves_the_annotated_direction(seed):
    """Its pixels' centroid travels its distance along its direction between the first and the
    last frame, and not at all across it; it stays whole on the canvas on every frame."""
    scene, pixels = sv.clip(seed, 8 + seed % 9)
    colours = Counter(m.colour for m in scene.objects)
    for mover in scene.objects:
        mask = None
        if colours[mover.colour] > 1:  # two objects of one colour: look inside this one's path only
            left, top, right, bottom = mover.swept()
            mask = np.zeros((sv.SIZE, sv.SIZE), dtype=bool)
            mask[top:bottom, left:right] = True
        first, last = centroid(pixels[0], mover.colour, mask), centroid(pixels[-1], mover.colour, mask)
        dx, dy = sv.STEPS[mover.direction]
        moved = last - first
        assert moved @ np.array([dx, dy]) == pytest.approx(mover.distance)
        assert moved @ np.array([dy, dx]) == pytest.approx(0)
        for t in range(scene.frames):
            left, top, right, bottom = mover.at(t, scene.frames).box
            assert 0 <= left and 0 <= top and right <= sv.SIZE and bottom <= sv.SIZE
        assert mover.name in shapes.object_names()


def test_paths_of_two_objects_never_touch():
    for seed in range(300):
        scene = sv.moving_scene(seed)
        if len(scene.objects) == 2:
            a, b = (m.swept() for m in scene.objects)
            assert shapes._apart(a, b)


def test_clips_hold_one_or_two_distinct_objects_in_reading_order():
    counts = Counter()
    for seed in range(300):
        scene = sv.moving_scene(seed)
        counts[len(scene.objects)] += 1
        assert len({m.name for m in scene.objects}) == len(scene.objects)
        assert [m.box[0] for m in scene.objects] == sorted(m.box[0] for m in scene.objects)
    assert set(counts) == {1, 2} and counts[2] > 60


def test_texts_agree_with_the_annotations():
    for seed in range(50):
        scene = sv.moving_scene(seed)
        text = sv.caption(scene)
        assert text.endswith(" .")
        assert sv.parse_caption(text) == [(m.name, m.direction) for m in scene.objects]
        for (question, answer), mover in zip(sv.questions(scene), scene.objects):
            assert mover.name in question and question.endswith("Answer left, right, up or down.")
            assert answer == mover.direction and sv.parse_direction(answer) == answer
    scene = sv.MovingScene((sv.Mover("circle", "red", "small", (2, 2, 10, 10), "left", 10),
                            sv.Mover("square", "blue", "small", (20, 20, 28, 28), "up", 10)), 8)
    assert sv.caption(scene) == "a red circle moves left and a blue square moves up ."
    assert sv.questions(scene)[0] == ("Which way does the red circle move? Answer left, right, up or down.", "left")


def test_parsers_read_what_models_may_say():
    assert sv.parse_direction("It moves Left.") == "left"
    assert sv.parse_direction("sideways") is None
    assert sv.parse_caption("a red circle and a blue square moves down .") == [("red circle", None),
                                                                               ("blue square", "down")]


def test_every_class_has_a_favoured_direction_spread_over_all_four():
    assert set(sv.PRIOR) == set(shapes.object_names())
    assert Counter(sv.PRIOR.values()) == {d: 3 for d in sv.DIRECTIONS}


@pytest.mark.parametrize("share", [0.25, 0.6])
def test_prior_share_sets_how_often_clips_move_the_favoured_way(share):
    movers = [m for seed in range(2000) for m in sv.moving_scene(seed, prior_share=share).objects]
    rate = np.mean([not sv.against_prior(m) for m in movers])
    assert abs(rate - share) < 0.04
    assert Counter(m.direction for m in movers if sv.against_prior(m)).keys() == set(sv.DIRECTIONS)


def test_noisy_direction_says_the_prior_only_against_it_and_at_its_rate():
    rng = random.Random(0)
    against = sv.Mover("circle", "red", "small", (2, 2, 10, 10), "right", 10)
    assert sv.against_prior(against) and against.prior == "left"
    said = Counter(sv.noisy_direction(against, rng, 0.6) for _ in range(4000))
    assert set(said) == {"left", "right"} and abs(said["left"] / 4000 - 0.6) < 0.03
    along = sv.Mover("circle", "red", "small", (2, 2, 10, 10), "left", 10)
    assert {sv.noisy_direction(along, rng, 1.0) for _ in range(50)} == {"left"}


def test_written_clip_reads_back_as_the_frames(tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("decord")
    from mmalign.modalities.video_io import read_clip

    scene, pixels = sv.clip(3)
    sv.write_clip(scene, tmp_path / "c.mp4")
    read = read_clip(tmp_path / "c.mp4", num_frames=scene.frames)
    assert read.frames.shape == pixels.shape and read.fps == sv.FPS
    assert np.abs(read.frames.numpy().astype(int) - pixels.astype(int)).mean() < 4
