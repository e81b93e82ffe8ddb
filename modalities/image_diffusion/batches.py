"""Batches of image-preference records, as every text-to-image plugin collates them.

A batch's inputs are the prompts and either the cached frozen work of its records
(``cache.py``) or their decoded images; its fields are the tie flags, the labels of unpaired
rows and the numeric columns every record has (per-row weights, margins).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mmalign.data.io import RowRef
from mmalign.errors import DataError
from mmalign.surrogate import Batch

from mmalign.modalities.image_diffusion import cache
from mmalign.modalities.image_diffusion.images import decode_rgb


def collate(records: Sequence[dict[str, Any]]) -> Batch:
    """The :class:`Batch` of ``records``: all paired or all unpaired."""
    sides = {len(r["images"]) for r in records}
    if len(sides) != 1:
        raise DataError("a batch mixes paired and unpaired rows", file=records[0]["file"],
                        hint="Use one schema and one model.options.pairing per data file")
    inputs: dict[str, Any] = {"prompts": [r["prompt"] for r in records]}
    if all("cache_file" in r for r in records):
        inputs.update(cache.read_cached(list(records)), cached=True,
                      empty=cache.read_empty(records[0]["cache_file"]))
    else:
        inputs.update(cached=False, images=[
            [decode_rgb(data, RowRef(r["file"], r["row"]), "image")[0] for data in r["images"]] for r in records])
    return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records], fields=fields(records, sides))


def fields(records: Sequence[dict[str, Any]], sides: set[int]) -> dict[str, torch.Tensor]:
    """``tie``, ``label`` of unpaired rows, and the numeric fields every record has, ``[B]``."""
    shared = set.intersection(*(set(r.get("fields", {})) for r in records))
    out = {name: torch.tensor([float(r["fields"][name]) for r in records]) for name in sorted(shared)}
    out["tie"] = torch.tensor([float(r.get("tie", False)) for r in records])
    if sides == {1}:
        out["label"] = torch.tensor([float(r["label"]) for r in records])
    return out


def pair_identical(record: dict[str, Any]) -> bool:
    """A pair of two images with the same bytes prefers nothing (for the data checks)."""
    images = record.get("images") or []
    return len(images) == 2 and images[0] == images[1]
