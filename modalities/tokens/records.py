"""Reading a local data file into records through a dataset schema, row by row.

A schema (``mmalign.registry.datasets``, e.g. ``text:preference``, ``vision_language:rlaif_v``)
turns one row into zero or more plain dict records; the plugin's ``make`` completes each one
(its ``sample_id``, tokens, checks). Exact duplicate rows are dropped and each row is checked
under ``checks.row()``: with ``data.on_bad_row: skip`` a bad row is dropped and counted
(:func:`mmalign.data.checks.load_checked`), the good ones kept; a row is kept or dropped whole.
"""
from __future__ import annotations

from typing import Any, Callable

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef, read_rows
from mmalign.errors import DataError
from mmalign.registry import datasets

#: ``guess(first row, where) -> schema name`` for recipes that leave ``data.schema`` empty
Guess = Callable[[dict[str, Any], RowRef], str]
#: ``make(record, where, k, count) -> record``: record ``k`` of the ``count`` a row yields
Make = Callable[[dict[str, Any], RowRef, int, int], dict[str, Any]]


def read_records(path: str, schema: str | None, *, guess: Guess, make: Make,
                 checks: RowChecks | None = None) -> list[dict[str, Any]]:
    """Every record of ``path`` (see the module docstring)."""
    checks = checks or RowChecks()
    records: list[dict[str, Any]] = []
    schema_fn = None
    for index, row in checks.unique(read_rows(path)):
        where = RowRef(str(path), index)
        if schema_fn is None:  # outside the row guard: a file no schema fits is not a bad row
            schema_fn = datasets.get(schema or guess(row, where))
        with checks.row():
            produced = schema_fn(row, where)
            records.extend([make(record, where, k, len(produced)) for k, record in enumerate(produced)])
    if schema_fn is None:
        raise DataError("holds no rows", file=str(path), hint="Point the recipe at a file with data")
    return records


def is_paired(records) -> bool:
    """Whether a batch's records are pairs (chosen / rejected) rather than unpaired rows
    (completion / label); a batch mixing both is refused."""
    kinds = {"chosen" in r for r in records}
    if len(kinds) > 1:
        raise DataError("a batch mixes paired rows (chosen / rejected) and unpaired rows (completion / label)",
                        hint="Use one data layout per run")
    return kinds.pop()


def mismatched(records, key: str = "completion") -> list:
    """Each row's neighbour's ``key`` (row ``i + 1``, cyclically): the mismatched completions
    of KTO's KL estimate (a batch of one row pairs the row with itself, which makes that
    estimate the matched log-likelihood, so use two or more)."""
    records = list(records)
    return [r[key] for r in records[1:] + records[:1]]
