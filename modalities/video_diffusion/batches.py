"""Batches of video-preference records.

A batch's inputs are the prompts and either the cached frozen work of its records
(``cache.py``) or their clips as pixels ``[B, S, 3, T, H, W]``; its fields are the numeric
columns every record has (the pair's score, per-row weights), as the image plugins collate
them (:func:`mmalign.modalities.image_diffusion.batches.fields`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mmalign.surrogate import Batch

from mmalign.modalities.image_diffusion import cache as image_cache
from mmalign.modalities.image_diffusion.batches import fields
from mmalign.modalities.video_diffusion.clips import record_pixels
from mmalign.modalities.video_diffusion.options import VideoOptions


def collate(records: Sequence[dict[str, Any]], options: VideoOptions) -> Batch:
    """The :class:`Batch` of ``records`` (pairs)."""
    inputs: dict[str, Any] = {"prompts": [r["prompt"] for r in records]}
    if all("cache_file" in r for r in records):
        inputs.update(image_cache.read_cached(list(records)), cached=True,
                      empty=image_cache.read_empty(records[0]["cache_file"]))
    else:
        pixels = [record_pixels(r, options.num_frames, options.sample_fps, options.height, options.width)
                  for r in records]
        inputs.update(cached=False, pixels=torch.stack(pixels))
    return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records],
                 fields=fields(records, {len(r["videos"]) for r in records}))


def pair_identical(record: dict[str, Any]) -> bool:
    """A pair of two clips with the same content prefers nothing (for the data checks)."""
    digests = record.get("digests") or []
    return len(digests) == 2 and digests[0] == digests[1]
