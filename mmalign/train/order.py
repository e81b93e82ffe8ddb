"""Which rows each process sees at each micro-step: a pure function of (seed, epoch, step).

Nothing here holds state, so resuming at step k reproduces exactly the rows an
uninterrupted run would have seen, on any number of processes. :func:`sort_rows` puts the
rows in a curriculum's order first (``data.order_by``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mmalign.errors import ConfigError, DataError


def sort_rows(records: Sequence[dict[str, Any]], order_by: str | None, source: str) -> list[dict[str, Any]]:
    """The records sorted (stably) by the numeric field ``order_by`` names, ascending, or
    descending with a leading ``-``; as they are without one. A row without a finite value
    in that field is a :class:`DataError` naming it."""
    if not order_by:
        return list(records)
    descending, field = order_by.startswith("-"), order_by.lstrip("-")
    keys = []
    for record in records:
        value = (record.get("fields") or {}).get(field)
        if value is None or not math.isfinite(float(value)):
            what = "has none" if value is None else f"is {value!r}"
            raise DataError(f"{source}: row '{record.get('sample_id')}': data.order_by field '{field}' {what}; "
                            "every row needs a finite number in that column")
        keys.append(float(value))
    index = sorted(range(len(keys)), key=lambda i: -keys[i] if descending else keys[i])
    return [records[i] for i in index]


@dataclass(frozen=True)
class Order:
    num_rows: int
    batch_size: int      # rows per process per micro-step
    grad_accum: int
    world_size: int
    seed: int
    shuffle: bool = True

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_rows // self.rows_per_step

    def check(self, source: str = "recipe") -> None:
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{source}: one optimiser step needs {self.rows_per_step} rows "
                f"(train.batch_size {self.batch_size} x train.grad_accum {self.grad_accum} x "
                f"{self.world_size} processes) but the data has {self.num_rows}; lower batch_size "
                "or grad_accum, or add data"
            )

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_rows)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_rows, generator=gen)

    def rows(self, step: int, micro: int, rank: int) -> tuple[int, list[int]]:
        """``(epoch, row indices)`` for optimiser ``step`` (0-based), micro-step and rank."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        start = ((in_epoch * self.grad_accum + micro) * self.world_size + rank) * self.batch_size
        perm = self.permutation(epoch)
        return epoch, perm[start:start + self.batch_size].tolist()
