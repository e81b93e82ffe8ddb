"""Ranked candidates into preference pairs.

A ranked row holds ``n`` clips of one prompt and a score each. ``best_worst`` keeps the one pair
of the highest over the lowest score (weight 1), as Tango 2 builds Audio-Alpaca from its
ranked samples (Majumder et al. 2024, arXiv:2404.09956). ``all`` keeps every pair of distinct
scores, weighted by the gap of their ranks over the largest gap, ``(rank_l - rank_w) / (n - 1)``:
the rank-gap weighting of AVP-RPO (MultiSoundGen, arXiv:2509.19999). The weight goes to the
row's ``rank_weight`` field, the core's per-row weight with ``data.weight_field: rank_weight``.
"""
from __future__ import annotations

from typing import Sequence

WEIGHT = "rank_weight"


def ranks(scores: Sequence[float]) -> list[int]:
    """0 for the best score; ties share the better rank."""
    ordered = sorted(scores, reverse=True)
    return [ordered.index(s) for s in scores]


def ranked_pairs(scores: Sequence[float], pairing: str = "best_worst") -> list[tuple[int, int, float]]:
    """``(winner index, loser index, weight)`` of a ranked row; no pair when all scores tie."""
    n = len(scores)
    if n < 2 or max(scores) == min(scores):
        return []
    if pairing == "best_worst":
        best = max(range(n), key=lambda i: (scores[i], -i))
        worst = min(range(n), key=lambda i: (scores[i], i))
        return [(best, worst, 1.0)]
    r = ranks(scores)
    gap = max(r) - min(r)
    return [(w, l, (r[l] - r[w]) / gap) for w in range(n) for l in range(n) if scores[w] > scores[l]]
