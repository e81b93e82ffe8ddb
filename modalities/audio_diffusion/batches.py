"""Batches of audio-preference records: the cached frozen work (``cache.py``) or the records
themselves (encoded at the step), and the numeric fields every record has (the image
plugins' :func:`~mmalign.modalities.image_diffusion.batches.fields`: ``rank_weight``, scores)."""
from __future__ import annotations

from typing import Any, Sequence

from mmalign.surrogate import Batch

from mmalign.modalities.audio_diffusion.cache import read_cached
from mmalign.modalities.image_diffusion.batches import fields


def collate(records: Sequence[dict[str, Any]]) -> Batch:
    inputs: dict[str, Any] = {"prompts": [r["prompt"] for r in records]}
    if all("cache_file" in r for r in records):
        inputs.update(read_cached(list(records)), cached=True)
    else:
        inputs.update(cached=False, records=list(records))
    return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records],
                 fields=fields(records, {len(r["audios"]) for r in records}))


def pair_identical(record: dict[str, Any]) -> bool:
    """A pair of two clips with the same content prefers nothing (for the data checks)."""
    digests = record.get("digests") or []
    return len(digests) == 2 and digests[0] == digests[1]
