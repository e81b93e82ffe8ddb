"""Per-row weights: one mechanism for every source of them.

A row's weight comes from its data (``data.weight_field`` names a numeric column, which the
schemas keep in ``record["fields"]``): VideoDPO's per-pair weights, rank-gap weights,
curriculum weights and the mixing weights of several preference sources are all written
there, by a pair builder or by hand. An objective may add reduction weights of its own
(``ObjectiveOutput.weight``, for unpaired or variable-size batches); the two multiply.

The batch loss, for per-row losses ``l_i``, row weights ``w_i`` and batch size ``B``
(``data.weight_reduction``):

* ``weighted_mean``: ``sum_i w_i * l_i / sum_i w_i``, the weights say how rows share the
  batch's gradient, so scaling every weight by a constant changes nothing;
* ``sum_over_batch``: ``sum_i w_i * l_i / B``, a weight of 2 counts a row twice and a weight
  of 0 drops it, and the batch's gradient grows with the weights (as VideoDPO's weighting does).

Without weights both are the plain mean, and an objective's own ``weight`` keeps its meaning
(``sum(l * weight) / sum(weight)``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from mmalign.errors import DataError


def row_weights(records: Sequence[dict[str, Any]], field: str | None, source: str) -> Tensor | None:
    """``[B]`` float weights read from ``record["fields"][field]``; None without a field.

    A missing, negative or non-finite weight is a :class:`DataError` naming the row."""
    if field is None:
        return None
    values = []
    for record in records:
        value = (record.get("fields") or {}).get(field)
        if value is None or not math.isfinite(float(value)) or float(value) < 0:
            what = "has none" if value is None else f"is {value!r}"
            raise DataError(f"{source}: row '{record.get('sample_id')}': data.weight_field '{field}' {what}; "
                            "every row needs a finite weight >= 0 in that column")
        values.append(float(value))
    return torch.tensor(values)


def reduce(loss: Tensor, objective_weight: Tensor | None, row_weight: Tensor | None,
           reduction: str = "weighted_mean") -> Tensor:
    """The batch loss from per-row losses (see the module docstring)."""
    weight = objective_weight
    if row_weight is not None:
        row_weight = row_weight.to(loss.device, loss.dtype)
        weight = row_weight if weight is None else weight * row_weight
    if weight is None:
        return loss.mean()
    if reduction == "sum_over_batch" and row_weight is not None:
        return (loss * weight).sum() / loss.shape[0]
    return (loss * weight).sum() / weight.sum().clamp_min(torch.finfo(loss.dtype).tiny)
