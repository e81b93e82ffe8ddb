"""``data.eval_fraction``: held-out rows taken from the training file."""
from __future__ import annotations

import hashlib
from typing import Any


def hold_out(records: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """``(train, held_out)``: each row is held out when a hash of ``(seed, sample_id)`` falls
    below ``fraction``, so a row's side depends on nothing but its id and the seed (not on the
    file's order or length). At least one row stays on each side when there are two or more."""
    if not fraction:
        return records, []
    scores = [_unit(seed, str(r["sample_id"])) for r in records]
    held = [s < fraction for s in scores]
    if len(records) >= 2 and not any(held):
        held[scores.index(min(scores))] = True
    if len(records) >= 2 and all(held):
        held[scores.index(max(scores))] = False
    return ([r for r, h in zip(records, held) if not h], [r for r, h in zip(records, held) if h])


def _unit(seed: int, sample_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}|{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2 ** 64
