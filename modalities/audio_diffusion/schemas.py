"""Dataset schemas of the audio-diffusion modality, registered as ``audio_diffusion:<name>``.

A schema reads one row into candidates, audio cells undecoded (the loader reads and checks
them)::

    {"prompt": str, "prompt_field": column, "lyrics": str,
     "audios": [cell, ...], "audio_fields": [column, ...],   # winner first
     "fields": {name: float}}

* ``audio_pairs``: Audio-Alpaca's columns, ``prompt``, ``chosen`` / ``rejected`` (or
  ``chosen_audio`` / ``rejected_audio``);
* ``audio_ranked``: ``prompt``, ``audios`` (a list) and ``scores`` (one per clip); the loader
  turns it into pairs (``pairs.py``, ``model.options.pairing``).
"""
from __future__ import annotations

import math
from typing import Any

from mmalign.data.io import RowRef
from mmalign.data.schemas import numeric_fields
from mmalign.registry import register_dataset

PAIR_COLUMNS = (("chosen_audio", "rejected_audio"), ("chosen", "rejected"))


def _prompt(row: dict, where: RowRef) -> tuple[str, str]:
    name = next((k for k in ("prompt", "caption", "text") if row.get(k) is not None), "prompt")
    if not isinstance(row.get(name), str):
        got = "is missing" if row.get(name) is None else f"must be text, got {type(row[name]).__name__}"
        raise where.error(name, got, "Give every row a 'prompt' (or 'caption') string")
    return row[name], name


def _lyrics(row: dict) -> str:
    return row.get("lyrics") if isinstance(row.get("lyrics"), str) else ""


@register_dataset("audio_diffusion:audio_pairs")
def audio_pairs(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """An Audio-Alpaca style pair: prompt, chosen and rejected clip, optional ``lyrics``."""
    prompt, field = _prompt(row, where)
    cols = next((c for c in PAIR_COLUMNS if all(row.get(k) is not None for k in c)), None)
    if cols is None:
        raise where.error("chosen_audio", "the row has no chosen / rejected clip",
                          "Give 'chosen_audio' and 'rejected_audio' (or 'chosen' and 'rejected') columns")
    read = {"prompt", "caption", "text", "lyrics", *cols}
    return [{"prompt": prompt, "prompt_field": field, "lyrics": _lyrics(row), "audios": [row[c] for c in cols],
             "audio_fields": list(cols), "fields": numeric_fields(row, read)}]


@register_dataset("audio_diffusion:audio_ranked")
def audio_ranked(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """Ranked candidates of one prompt: ``audios`` and ``scores`` lists of one length (>= 2)."""
    prompt, field = _prompt(row, where)
    audios, scores = row.get("audios"), row.get("scores")
    if not isinstance(audios, list) or len(audios) < 2:
        raise where.error("audios", "needs a list of at least two clips", "Give each prompt two or more clips")
    ok = isinstance(scores, list) and len(scores) == len(audios) and all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in scores)
    if not ok:
        raise where.error("scores", f"needs one finite number per clip ({len(audios)})",
                          "Give 'scores' as a list of numbers, one per clip in 'audios'")
    return [{"prompt": prompt, "prompt_field": field, "lyrics": _lyrics(row), "audios": list(audios),
             "audio_fields": [f"audios[{i}]" for i in range(len(audios))], "scores": [float(s) for s in scores],
             "fields": numeric_fields(row, {"prompt", "caption", "text", "lyrics", "audios", "scores"})}]
