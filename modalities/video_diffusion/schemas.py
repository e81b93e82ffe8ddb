"""Dataset schemas of the video-diffusion modality, registered in ``mmalign.registry.datasets``
as ``video_diffusion:<name>`` (a recipe may write the bare name).

A schema reads one row of a table into the examples it holds, clip cells undecoded (the loader
reads and checks them)::

    {"prompt": str, "prompt_field": column,
     "videos": [cell, cell], "video_fields": [column, column],   # winner first
     "fields": {name: float}}                                    # the row's numeric columns

``score``, when the row has one, is among ``fields``: a finite number per pair (VideoDPO's pair
score; ``data.weight_field: score`` makes it the row's weight in the loss, and
``model.options.videodpo_alpha`` turns it into VideoDPO's weight first).
"""
from __future__ import annotations

import math
from typing import Any

from mmalign.data.io import RowRef, require_fields
from mmalign.data.schemas import numeric_fields
from mmalign.registry import register_dataset

SCORE = "score"


def _prompt(row: dict, where: RowRef) -> tuple[str, str]:
    name = "prompt" if row.get("prompt") is not None else "caption" if row.get("caption") is not None else "prompt"
    if row.get(name) is None:
        present = ", ".join(sorted(k for k, v in row.items() if v is not None)) or "(none)"
        raise where.error("prompt", "is missing", f"Add a 'prompt' (or 'caption') column (this row has: {present})")
    if not isinstance(row[name], str):
        raise where.error(name, f"the prompt must be text, got {type(row[name]).__name__}",
                          "Store the caption as a string")
    return row[name], name


def _score(row: dict, where: RowRef) -> None:
    """An optional per-pair score must be a finite number when it is given."""
    value = row.get(SCORE)
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise where.error(SCORE, f"the pair's score must be a finite number, got {value!r}",
                          "Write the pair's score as a number, or leave the cell empty")


@register_dataset("video_diffusion:video_pairs")
def video_pairs(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """A text-to-video pair table: ``prompt`` (or ``caption``), ``chosen_video`` and
    ``rejected_video`` (paths relative to the data file, or encoded bytes), an optional numeric
    ``score`` per pair; other numeric columns are kept in ``fields`` too."""
    prompt, prompt_field = _prompt(row, where)
    require_fields(row, ("chosen_video", "rejected_video"), where)
    _score(row, where)
    read = {"prompt", "caption", "chosen_video", "rejected_video"}
    return [{"prompt": prompt, "prompt_field": prompt_field, "videos": [row["chosen_video"], row["rejected_video"]],
             "video_fields": ["chosen_video", "rejected_video"], "fields": numeric_fields(row, read)}]
