"""The vision- and audio-language figures of ``mmalign data stats``: how many images, clips
and sounds the records hold and how many prompt tokens each becomes (what a recipe's memory
grows with).

Counted from each record's ``prompt_ids`` (a list of token ids, as the processor expanded
the placeholders): a run of consecutive image tokens is one image, a run of consecutive video
tokens one clip, a run of audio tokens one sound. Two images whose placeholders are adjacent in the prompt, with no text or
marker between them, make one run and so count as one image of twice the tokens; records
not tokenized yet (no ``prompt_ids``) count nothing.
"""
from __future__ import annotations

import statistics
from typing import Any, Iterable, Sequence


def media_token_stats(records: Iterable[dict[str, Any]], image_token_id: int | None,
                      video_token_id: int | None, audio_token_id: int | None = None) -> dict[str, int | float]:
    """Over all ``records``: ``images``, ``clips`` and ``sounds`` (counts) and
    ``tokens_per_image_min`` / ``_median`` / ``_max`` (likewise ``_clip_``, ``_sound_``; only
    when there is at least one). A kind whose token id is None is left out."""
    kinds = [(kind, token_id) for kind, token_id in
             (("image", image_token_id), ("clip", video_token_id), ("sound", audio_token_id)) if token_id is not None]
    runs: dict[str, list[int]] = {kind: [] for kind, _ in kinds}
    for record in records:
        ids = record.get("prompt_ids") or []
        for kind, token_id in kinds:
            runs[kind].extend(token_runs(ids, token_id))
    out: dict[str, int | float] = {}
    for kind, _ in kinds:
        lengths = runs[kind]
        out[f"{kind}s"] = len(lengths)
        if lengths:
            out.update({f"tokens_per_{kind}_min": min(lengths), f"tokens_per_{kind}_median": statistics.median(lengths),
                        f"tokens_per_{kind}_max": max(lengths)})
    return out


def token_runs(ids: Sequence[int], token_id: int) -> list[int]:
    """The length of each run of consecutive ``token_id`` in ``ids``, in order."""
    lengths: list[int] = []
    previous = None
    for token in ids:
        if token == token_id:
            if previous == token_id:
                lengths[-1] += 1
            else:
                lengths.append(1)
        previous = token
    return lengths
