"""Loading a data file through a modality, with the checks every modality's records share.

The trainer calls :func:`load_checked` instead of ``modality.load_records``. Degenerate data
is not accepted silently: a pair whose chosen equals its rejected, a NaN or infinite number,
or a row the modality cannot use either stops the run (``data.on_bad_row: error``, the
default) with a :class:`~mmalign.errors.DataError` naming file, row and field, or is dropped
and counted (``skip``). Exact duplicate rows (every column equal) are always dropped, the
first kept, and counted; the same pair in two rows that differ elsewhere (an id, a rater) is
a pair rated twice, and kept. Repairs a modality makes (RGBA to RGB, truncation) are
counted too, and every count is logged.

Nothing here knows what an image or a token is. A modality takes part through two optional
hooks, so a plugin written against the plain ``load_records(path, schema)`` keeps working:

* ``load_records(path, schema, *, checks: RowChecks)``: read rows through
  ``checks.unique(rows)`` (counts them, drops exact duplicates), wrap the work of each in
  ``with checks.row(): ...`` so a bad row is dropped under ``skip`` without losing the good
  ones, and add repairs to ``checks.counts``. A modality that does not read through
  ``unique`` has its records deduplicated instead (ids and where they come from left out);
* ``pair_identical(record) -> bool``: content-level equality of a pair the records do not
  show as equal ``chosen`` / ``rejected`` values (two images with the same bytes).

Count keys: ``rows_read``, ``records_kept``, ``deduplicated``, ``dropped: <reason>`` and
whatever repairs the modality names (``repaired: RGBA to RGB``, ...).
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import math
import re
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from mmalign.errors import ConfigError, DataError

log = logging.getLogger("mmalign")

ON_BAD_ROW = ("error", "skip")
SKIP_HINT = "set data.on_bad_row: skip to drop and count such rows"
#: record keys that say where a record comes from, not what it holds (left out when records,
#: not rows, are deduplicated)
IDENTITY_KEYS = frozenset({"sample_id", "source", "file", "row"})
SAME_PAIR = "dropped: chosen equals rejected"
#: values whose ``repr`` is unambiguous, so a list of them (token ids) is hashed in one go
SCALARS = (int, float, str, bool, type(None))


class RowChecks:
    """What :func:`load_checked` hands a modality's ``load_records``: the ``on_bad_row``
    policy, and the counts the modality adds to (rows read, rows dropped, repairs)."""

    def __init__(self, on_bad_row: str = "error"):
        if on_bad_row not in ON_BAD_ROW:
            raise ConfigError(f"data.on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.counts: Counter = Counter()
        #: the first full message of each ``dropped: ...`` reason, for the log
        self.examples: dict[str, str] = {}
        #: whether the modality read its rows through :meth:`unique` (rows deduplicated)
        self.rows_deduplicated = False

    def unique(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(index, row)`` of each row read, less exact duplicates of an earlier row
        (counted as ``deduplicated``); ``rows_read`` counts them all."""
        self.rows_deduplicated = True
        seen: set[str] = set()
        for index, row in rows:
            self.counts["rows_read"] += 1
            key = fingerprint(row)
            if key in seen:
                self.counts["deduplicated"] += 1
                continue
            seen.add(key)
            yield index, row

    @contextmanager
    def row(self) -> Iterator[None]:
        """Guard the work of one data row. Under ``skip`` a DataError naming a row drops the
        row and is counted; one naming no row (the file itself) always propagates."""
        try:
            yield
        except DataError as err:
            if self.on_bad_row != "skip" or err.row is None:
                raise
            self.drop(err)

    def drop(self, err: DataError, reason: str | None = None) -> None:
        """Count a dropped row under ``reason`` (by default, the error's field and message
        with the parts that differ from row to row, such as paths, left out)."""
        key = reason or f"dropped: {_reason(err)}"
        self.counts[key] += 1
        self.examples.setdefault(key, str(err))


def load_checked(modality: Any, path: str, schema: str | None,
                 on_bad_row: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The records of ``path`` that pass the checks, and the counts by reason (also logged).

    Raises DataError for the first bad row under ``on_bad_row="error"``, and when no record
    is left."""
    checks = RowChecks(on_bad_row)
    records = _modality_records(modality, path, schema, checks)
    kept = _check_records(modality, records, path, checks)
    checks.counts["records_kept"] = len(kept)
    counts = dict(checks.counts)
    _log(path, counts, checks.examples)
    if not kept:
        raise DataError("no usable rows left after the data checks", file=str(path),
                        hint=f"Counts: {counts}; fix the rows named in the log")
    return kept, counts


def check_loaded(modality: Any, records: list[dict[str, Any]], counts: dict[str, int],
                 on_bad_row: str) -> list[dict[str, Any]]:
    """Rows checked once more after the model loads, by the modality's optional
    ``check_record(record)`` (what needs the tokenizer or processor: a prompt that leaves no
    room for a response, tokenising for the first time), so no bad row waits for its batch.
    Drops and counts under ``skip`` as :func:`load_checked` does; updates ``counts``."""
    check = getattr(modality, "check_record", None)
    if check is None:
        return records
    rows = RowChecks(on_bad_row)
    kept = []
    for record in records:
        try:
            with rows.row():
                check(record)
                kept.append(record)
        except DataError as err:
            raise (err if "on_bad_row" in str(err) else _with_hint(err, SKIP_HINT)) from None
    for key, value in rows.counts.items():
        counts[key] = counts.get(key, 0) + value
    counts["records_kept"] = len(kept)
    if rows.counts:
        _log("after the model loaded", dict(rows.counts, records_kept=len(kept)), rows.examples)
    if not kept:
        raise DataError("no usable rows left after the data checks", hint=f"Counts: {counts}")
    return kept


def takes_checks(modality: Any) -> bool:
    """Whether the modality's ``load_records`` accepts ``checks=`` (by name, not ``**kwargs``)."""
    try:
        return "checks" in inspect.signature(modality.load_records).parameters
    except (TypeError, ValueError):
        return False


def _modality_records(modality: Any, path: str, schema: str | None, checks: RowChecks) -> list[dict]:
    if not takes_checks(modality):
        if checks.on_bad_row == "skip":
            log.warning("%s: this modality's load_records takes no 'checks', so rows it refuses still "
                        "stop the run; only the shared checks drop and count rows", path)
        return list(modality.load_records(path, schema))
    try:
        return list(modality.load_records(path, schema, checks=checks))
    except DataError as err:
        if err.row is None or checks.on_bad_row == "skip" or "on_bad_row" in str(err):
            raise
        raise _with_hint(err, SKIP_HINT) from err


def _check_records(modality: Any, records: list[dict], path: str, checks: RowChecks) -> list[dict]:
    """Drop (or refuse) pairs that prefer nothing and non-finite numbers; drop duplicate
    records when the modality did not drop duplicate rows."""
    identical = getattr(modality, "pair_identical", None) or _same_values
    seen: set[str] = set()
    kept = []
    for record in records:
        bad = _non_finite(record)
        if bad is None and identical(record):
            bad = SAME_PAIR, "rejected", "is the same as 'chosen', so the pair prefers nothing"
        if bad is not None:
            reason, field, message = bad
            err = _record_error(record, path, field, message)
            if checks.on_bad_row != "skip":
                raise err
            checks.drop(err, reason)
            continue
        if not checks.rows_deduplicated:
            key = fingerprint({k: v for k, v in record.items() if k not in IDENTITY_KEYS})
            if key in seen:
                checks.counts["deduplicated"] += 1
                continue
            seen.add(key)
        kept.append(record)
    return kept


def _same_values(record: dict[str, Any]) -> bool:
    return "chosen" in record and "rejected" in record and record["chosen"] == record["rejected"]


def _non_finite(record: dict[str, Any]) -> tuple[str, str, str] | None:
    """``(reason, field, message)`` for the first NaN / inf number of a record: its top-level
    numbers, and those of top-level dicts (columns a schema keeps together, e.g. ``fields``)."""
    for name, value in record.items():
        inner = value.items() if isinstance(value, dict) else [(name, value)]
        for field, number in inner:
            if isinstance(number, float) and not math.isfinite(number):
                return f"dropped: NaN or inf in '{field}'", field, f"is {number}, not a finite number"
    return None


def fingerprint(value: Any) -> str:
    """A digest of a row's or record's content, for exact duplicates.

    Every value is hashed with its type and length, so ``["ab", "c"]`` and ``["a", "bc"]``
    differ (the precomputed-reference fingerprint concatenates bytes: fine for a cache key,
    not for telling rows apart)."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, value)
    return h.hexdigest()


def _feed(h, value: Any) -> None:
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        h.update(b"d%d:" % len(items))
        for k, v in items:
            _feed(h, str(k))
            _feed(h, v)
    elif isinstance(value, (list, tuple)) and not all(isinstance(v, SCALARS) for v in value):
        h.update(b"l%d:" % len(value))
        for v in value:
            _feed(h, v)
    else:
        data = _leaf_bytes(value)
        h.update(b"%s%d:" % (type(value).__name__.encode(), len(data)))
        h.update(data)


def _leaf_bytes(value: Any) -> bytes:
    """The content of a value; arrays and tensors by their data, as their repr abbreviates."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if hasattr(value, "detach"):  # a tensor, without importing torch here
        value = value.detach().cpu().numpy()
    if hasattr(value, "tobytes"):  # numpy arrays, PIL images
        layout = (getattr(value, "shape", None), str(getattr(value, "dtype", "")), getattr(value, "size", None))
        return repr(layout).encode() + value.tobytes()
    return repr(value).encode()


def _record_error(record: dict[str, Any], path: str, field: str, message: str) -> DataError:
    """A DataError at a record's file and row (``file``/``row`` or ``source``), else its id."""
    source = record.get("source") if isinstance(record.get("source"), dict) else record
    file, row = source.get("file", path), source.get("row")
    if row is None:
        message = f"record '{record.get('sample_id', '?')}': {message}"
    return DataError(message, file=str(file), row=row, field=field, hint=f"Fix or remove the row, or {SKIP_HINT}")


def _with_hint(err: DataError, extra: str) -> DataError:
    hint = f"{err.hint}; or {extra}" if err.hint else extra[0].upper() + extra[1:]
    return DataError(message_of(err), file=err.file, row=err.row, field=err.field, hint=hint)


def message_of(err: DataError) -> str:
    """What is wrong, without the ``file, row, field:`` in front and the hint after."""
    text = str(err)
    where = str(DataError("", file=err.file, row=err.row, field=err.field))
    text = text[len(where):] if where and text.startswith(where) else text
    suffix = f". {err.hint}" if err.hint else ""
    return text[: len(text) - len(suffix)] if suffix and text.endswith(suffix) else text


def _reason(err: DataError) -> str:
    """A count key shared by rows with the same problem: quoted values, parenthesised
    details and list indices (which differ from row to row) are left out."""
    message, nested = message_of(err), None
    while nested != message:  # innermost parentheses first: details may nest
        nested, message = message, re.sub(r"\s*\([^()]*\)", "", message)
    message = re.sub(r"'[^']*'", "…", message).strip()
    field = re.sub(r"\[\d+\]", "[*]", err.field) if err.field else None
    return f"{field}: {message}" if field else message


def _log(path: str, counts: dict[str, int], examples: dict[str, str]) -> None:
    read = f"{counts['rows_read']} rows read, " if "rows_read" in counts else ""
    counts = {**counts, "records_kept": counts.get("records_kept", 0)}
    log.info("%s: %s%d records kept", path, read, counts["records_kept"])
    for key in sorted(k for k in counts if k not in ("rows_read", "records_kept")):
        first = f" (first: {examples[key]})" if key in examples else ""
        level = logging.WARNING if key.startswith("dropped") else logging.INFO
        log.log(level, "%s: %s: %d%s", path, key, counts[key], first)
