"""Temporal perturbations of a clip's frames ``[T, H, W, C]``: reverse, shuffle, drop, speed;
and of a sound's samples: silenced or reordered spans (mDPO's corrupted sound).

TEMPLE (Li et al. 2025, arXiv:2503.16929, section 3.2) builds rejected answers from a video
LLM's answers on perturbed clips; mDPO on video (Wang et al. 2024, arXiv:2406.11839, applied
to clips) scores the chosen answer under a clip whose temporal evidence is destroyed. Every
perturbation here keeps the frame count ``T`` and the frame size, so the perturbed clip
becomes exactly as many tokens as the clean one and can stand in for it in a prompt.
All randomness comes from the ``generator`` given (one per row).

Reverse and shuffle act on ``segments`` contiguous runs of frames (TEMPLE reverses or
shuffles groups of clips): the clip is cut at ``floor(j * T / segments)``, ``j = 1 ..
segments - 1``, the runs are reordered and each run keeps its frames in order. Without
``segments`` every frame is its own run (the whole clip reversed or shuffled frame by frame).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

KINDS = ("reverse", "shuffle", "drop", "speed")


def segment_bounds(count: int, segments: int) -> list[tuple[int, int]]:
    """``segments`` contiguous runs ``[start, end)`` covering ``count`` frames, sizes as equal
    as possible (run ``j`` starts at ``floor(j * count / segments)``); ``segments`` is capped at
    ``count``."""
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ValueError(f"segments must be a positive integer (got {segments!r})")
    segments = min(segments, max(count, 1))
    bounds = [j * count // segments for j in range(segments + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _reordered(frames: Tensor, runs: list[tuple[int, int]], order: list[int]) -> Tensor:
    return frames[torch.cat([torch.arange(*runs[k]) for k in order])]


def reverse(frames: Tensor, segments: int | None = None) -> Tensor:
    """The frames in reverse order: motion runs backwards. With ``segments``, the order of the
    runs is reversed and each run plays forward (one segment: the clip unchanged)."""
    if segments is None:
        return frames.flip(0)
    runs = segment_bounds(frames.shape[0], segments)
    return _reordered(frames, runs, list(range(len(runs)))[::-1])


def shuffle(frames: Tensor, generator: torch.Generator, segments: int | None = None) -> Tensor:
    """The frames (or, with ``segments``, the runs) in a random order other than the original
    (a clip of one frame, or one segment, is kept)."""
    count = frames.shape[0] if segments is None else len(segment_bounds(frames.shape[0], segments))
    if count < 2:
        return frames
    order = torch.randperm(count, generator=generator)
    if torch.equal(order, torch.arange(count)):  # the identity is no perturbation: rotate it
        order = order.roll(1)
    if segments is None:
        return frames[order]
    return _reordered(frames, segment_bounds(frames.shape[0], segments), order.tolist())


def drop(frames: Tensor, generator: torch.Generator, fraction: float = 0.5) -> Tensor:
    """``round(fraction * T)`` random frames removed (rounding half up; never all), each replaced
    by the last kept frame before it (the first kept one for leading gaps): the clip stutters
    and loses events."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"drop fraction must lie in [0, 1] (got {fraction})")
    count = frames.shape[0]
    n_drop = min(math.floor(fraction * count + 0.5), count - 1)
    if n_drop <= 0:
        return frames
    dropped = torch.zeros(count, dtype=torch.bool)
    dropped[torch.randperm(count, generator=generator)[:n_drop]] = True
    kept = (~dropped).nonzero().flatten()
    # each frame shows the latest kept frame at or before it (or the first kept frame)
    source = torch.searchsorted(kept, torch.arange(count), right=True) - 1
    return frames[kept[source.clamp(min=0)]]


def speed(frames: Tensor, factor: float) -> Tensor:
    """The clip played ``factor`` times as fast: frame ``t`` shows source frame
    ``min(floor(t * factor), T - 1)`` (faster: the end is held; slower: only the start shows)."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive (got {factor})")
    count = frames.shape[0]
    # the tolerance keeps an exact product exact: 0.29 * 100 is 28.999999999999996 in binary
    times = torch.arange(count, dtype=torch.float64) * factor
    source = torch.clamp((times + 1e-9).floor().long(), max=count - 1)
    return frames[source]


def mask_spans(wave: Tensor, generator: torch.Generator, fraction: float = 0.5, spans: int = 8) -> Tensor:
    """A sound (``[samples]``, or any sequence along dim 0) with ``round(fraction * spans)`` of
    its ``spans`` equal runs (:func:`segment_bounds`) silenced, chosen at random: the events in
    them are gone, the length (hence the token count) is kept."""
    runs = segment_bounds(wave.shape[0], spans)
    out = wave.clone()
    for k in torch.randperm(len(runs), generator=generator)[: round(fraction * len(runs))].tolist():
        out[runs[k][0]:runs[k][1]] = 0
    return out


def corrupt_sound(wave: Tensor, kind: str, generator: torch.Generator, spans: int = 8) -> Tensor:
    """mDPO's corrupted sound: ``mask`` silences half of ``spans`` runs, ``shuffle`` reorders them."""
    if kind == "mask":
        return mask_spans(wave, generator, 0.5, spans)
    if kind == "shuffle":
        return shuffle(wave, generator, segments=spans)
    raise ValueError(f"unknown sound corruption {kind!r}; use mask or shuffle")


def perturb(frames: Tensor, kind: str, generator: torch.Generator, strength: float = 0.5) -> Tensor:
    """Apply perturbation ``kind``; ``strength`` is drop's fraction and speed's ``1 + strength``-fold
    speed-up (reverse and shuffle act frame by frame and have no strength)."""
    if kind == "reverse":
        return reverse(frames)
    if kind == "shuffle":
        return shuffle(frames, generator)
    if kind == "drop":
        return drop(frames, generator, strength)
    if kind == "speed":
        return speed(frames, 1.0 + strength)
    raise ValueError(f"unknown clip perturbation {kind!r}; use one of {', '.join(KINDS)}")
