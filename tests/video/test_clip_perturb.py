"""The clip perturbations worked out by hand on tiny clips whose frame ``t`` is filled with the
value ``t``, so a perturbed clip reads back as the list of source frames it shows.

The permutations quoted from ``torch.randperm`` are what it draws from
``torch.Generator().manual_seed(seed)`` on the CPU (checked in ``test_quoted_draws``, so a
change in torch's generator shows up there first, not as a puzzling order below)."""
from __future__ import annotations

import pytest
import torch

from mmalign.modalities.vision_language.clip_perturb import (KINDS, drop, perturb, reverse, segment_bounds, shuffle,
                                                             speed)


def clip(count: int) -> torch.Tensor:
    """uint8 frames ``[T, 2, 2, 3]`` whose every pixel of frame ``t`` is ``t``."""
    return torch.arange(count, dtype=torch.uint8)[:, None, None, None].expand(count, 2, 2, 3).contiguous()


def shown(frames: torch.Tensor) -> list[int]:
    """The source frame each frame of a perturbed clip shows (frames stay whole)."""
    assert torch.equal(frames, frames[:, :1, :1, :1].expand_as(frames))
    return frames[:, 0, 0, 0].tolist()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_quoted_draws():
    """The randperm draws the hand-worked expectations below start from."""
    assert torch.randperm(5, generator=gen(0)).tolist() == [4, 0, 1, 3, 2]
    assert torch.randperm(6, generator=gen(0)).tolist() == [2, 5, 3, 0, 1, 4]
    assert torch.randperm(5, generator=gen(1)).tolist() == [0, 4, 2, 3, 1]
    assert torch.randperm(4, generator=gen(0)).tolist() == [0, 1, 3, 2]
    assert torch.randperm(3, generator=gen(0)).tolist() == [2, 0, 1]
    assert torch.randperm(3, generator=gen(7)).tolist() == [0, 1, 2]  # the identity
    assert torch.randperm(2, generator=gen(0)).tolist() == [0, 1]  # the identity


# -- segments -------------------------------------------------------------------------------

def test_segment_bounds():
    # run j starts at floor(j * T / segments): T=6, 4 runs -> 0, 1, 3, 4 (end 6)
    assert segment_bounds(6, 4) == [(0, 1), (1, 3), (3, 4), (4, 6)]
    # T=5, 2 runs -> 0, 2 (end 5): the longer run is the second
    assert segment_bounds(5, 2) == [(0, 2), (2, 5)]
    # more runs than frames: one frame each
    assert segment_bounds(3, 5) == [(0, 1), (1, 2), (2, 3)]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="segments must be a positive integer"):
            segment_bounds(4, bad)


# -- reverse --------------------------------------------------------------------------------

def test_reverse_by_hand():
    # frame by frame: 0 1 2 3 4 -> 4 3 2 1 0
    assert shown(reverse(clip(5))) == [4, 3, 2, 1, 0]
    # 2 runs of 5 frames: [0 1] [2 3 4] -> [2 3 4] [0 1]
    assert shown(reverse(clip(5), segments=2)) == [2, 3, 4, 0, 1]
    # 3 runs of 6 frames: [0 1] [2 3] [4 5] -> [4 5] [2 3] [0 1]
    assert shown(reverse(clip(6), segments=3)) == [4, 5, 2, 3, 0, 1]
    # 4 runs of 6 frames: [0] [1 2] [3] [4 5] -> [4 5] [3] [1 2] [0]
    assert shown(reverse(clip(6), segments=4)) == [4, 5, 3, 1, 2, 0]
    # as many runs as frames (or more) is the frame-by-frame reversal; one run changes nothing
    assert shown(reverse(clip(4), segments=4)) == shown(reverse(clip(4), segments=9)) == [3, 2, 1, 0]
    assert shown(reverse(clip(4), segments=1)) == [0, 1, 2, 3]


# -- shuffle --------------------------------------------------------------------------------

def test_shuffle_by_hand():
    # randperm(5) from seed 0 is [4, 0, 1, 3, 2]: not the identity, so it is the new order
    assert shown(shuffle(clip(5), gen(0))) == [4, 0, 1, 3, 2]
    # randperm(3) from seed 7 is the identity [0, 1, 2]: rotated by one to [2, 0, 1]
    assert shown(shuffle(clip(3), gen(7))) == [2, 0, 1]
    # randperm(2) from seed 0 is the identity: rotated, the two frames swap
    assert shown(shuffle(clip(2), gen(0))) == [1, 0]
    # 3 runs [0 1] [2 3] [4 5], run order randperm(3) from seed 0 = [2, 0, 1]
    assert shown(shuffle(clip(6), gen(0), segments=3)) == [4, 5, 0, 1, 2, 3]
    # 2 runs [0 1 2] [3 4 5], randperm(2) from seed 0 is the identity: rotated, the halves swap
    assert shown(shuffle(clip(6), gen(0), segments=2)) == [3, 4, 5, 0, 1, 2]
    # nothing to reorder: one frame, or one run
    assert shown(shuffle(clip(1), gen(0))) == [0]
    assert shown(shuffle(clip(4), gen(0), segments=1)) == [0, 1, 2, 3]


@pytest.mark.parametrize("count", [2, 3, 4, 5, 6])
def test_shuffle_is_a_permutation_and_never_the_identity(count):
    for seed in range(200):
        order = shown(shuffle(clip(count), gen(seed)))
        assert sorted(order) == list(range(count)) and order != list(range(count))
        runs = shown(shuffle(clip(count), gen(seed), segments=2))
        assert sorted(runs) == list(range(count)) and runs != list(range(count))


# -- drop -----------------------------------------------------------------------------------

def test_drop_by_hand():
    # T=6, fraction 0.5: 3 frames dropped, the first 3 of randperm(6) from seed 0 = [2, 5, 3, 0, 1, 4],
    # so 2, 5, 3 go and 0, 1, 4 stay; 2 and 3 show the last kept frame before them (1), 5 shows 4
    assert shown(drop(clip(6), gen(0), 0.5)) == [0, 1, 1, 1, 4, 4]
    # T=5, fraction 0.4: 2 frames, randperm(5) from seed 0 = [4, 0, ...]: 4 and 0 go, 1 2 3 stay;
    # frame 0 is a leading gap and shows the first kept frame (1), frame 4 shows 3
    assert shown(drop(clip(5), gen(0), 0.4)) == [1, 1, 2, 3, 3]
    # T=5, fraction 0.5: 2.5 frames round half up to 3 (Python's round() would give 2);
    # randperm(5) from seed 1 = [0, 4, 2, ...]: 0, 4, 2 go, 1 and 3 stay
    assert shown(drop(clip(5), gen(1), 0.5)) == [1, 1, 1, 3, 3]
    # fraction 1 never drops every frame: T=4 keeps one, randperm(4) from seed 0 = [0, 1, 3, 2]
    # drops 0, 1, 3 and every frame shows frame 2
    assert shown(drop(clip(4), gen(0), 1.0)) == [2, 2, 2, 2]
    # fraction 0, or a clip of one frame: nothing to drop
    assert shown(drop(clip(4), gen(0), 0.0)) == [0, 1, 2, 3]
    assert shown(drop(clip(1), gen(0), 1.0)) == [0]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="drop fraction must lie in"):
            drop(clip(4), gen(0), bad)


# -- speed ----------------------------------------------------------------------------------

def test_speed_by_hand():
    # factor 2: frame t shows min(floor(2 t), 5) = 0 2 4 6->5 8->5 10->5: the end is held
    assert shown(speed(clip(6), 2.0)) == [0, 2, 4, 5, 5, 5]
    # factor 0.5: floor(t / 2) = 0 0 1 1 2 2: only the first half of the clip shows
    assert shown(speed(clip(6), 0.5)) == [0, 0, 1, 1, 2, 2]
    # factor 1.5 on 4 frames: floor(0, 1.5, 3, 4.5) = 0 1 3 4->3
    assert shown(speed(clip(4), 1.5)) == [0, 1, 3, 3]
    assert shown(speed(clip(4), 1.0)) == [0, 1, 2, 3]
    # 100 * 0.29 is 28.999999999999996 in binary; frame 100 still shows frame 29
    assert int(speed(torch.arange(101), 0.29)[100]) == 29
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="speed factor must be positive"):
            speed(clip(4), bad)


# -- perturb --------------------------------------------------------------------------------

def test_perturb_dispatches_with_its_strength():
    frames = clip(6)
    assert shown(perturb(frames, "reverse", gen(0))) == [5, 4, 3, 2, 1, 0]
    assert shown(perturb(frames, "shuffle", gen(0))) == shown(shuffle(frames, gen(0)))
    # strength is drop's fraction ...
    assert shown(perturb(frames, "drop", gen(0), 0.5)) == [0, 1, 1, 1, 4, 4]
    # ... and speed's 1 + strength speed-up
    assert shown(perturb(frames, "speed", gen(0), 1.0)) == [0, 2, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="unknown clip perturbation 'blur'"):
        perturb(frames, "blur", gen(0))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_keeps_shape_and_dtype(kind):
    frames = torch.randint(0, 256, (8, 6, 4, 3), dtype=torch.uint8, generator=gen(3))
    out = perturb(frames, kind, gen(0))
    assert out.shape == frames.shape and out.dtype == frames.dtype and not torch.equal(out, frames)
