"""Confidence intervals of the measured proportions evaluators and demo claims report."""
from __future__ import annotations

import math

#: the two-sided 95% quantile of the standard normal
Z_95 = 1.959963984540054


def wilson_interval(correct: int, count: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval (Wilson 1927) for a proportion ``correct / count``:
    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``; ``(0, 1)`` when ``count``
    is 0. Unlike ``p -+ z sqrt(p(1-p)/n)`` it stays inside [0, 1] and is not empty at 0 or n."""
    if count == 0:
        return 0.0, 1.0
    p, z2 = correct / count, z * z
    centre = (p + z2 / (2 * count)) / (1 + z2 / count)
    half = z / (1 + z2 / count) * math.sqrt(p * (1 - p) / count + z2 / (4 * count * count))
    return max(0.0, centre - half), min(1.0, centre + half)
