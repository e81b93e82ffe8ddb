"""Reading local data files into rows, and naming what is wrong with them.

Every format goes through ``datasets`` (no hub access: only local files are opened). A file
that cannot be read raises :class:`~mmalign.errors.DataError` naming the file, and for JSON
the line; a row with a missing or empty field raises one naming file, row and field. Rows
count from 0, as ``datasets`` and pandas index them. Nothing here knows about modalities.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from mmalign.errors import DataError

#: file suffix -> ``datasets`` builder name
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


@dataclass(frozen=True)
class RowRef:
    """Where a row comes from, so a schema can say where a problem is."""

    file: str
    row: int

    def error(self, field: str | None, message: str, hint: str | None = None) -> DataError:
        return DataError(message, file=self.file, row=self.row, field=field, hint=hint)


def read_rows(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row_index, row)`` for each row of a local jsonl / json / parquet / arrow / csv
    file, or of a folder written by ``Dataset.save_to_disk``.

    Image columns stay encoded (``{"bytes", "path"}``): a modality decodes them when it needs
    pixels, and a record stays small and hashable."""
    import datasets

    datasets.disable_progress_bars()  # a progress bar per small file is noise in the run log
    dataset = _keep_images_encoded(_open(Path(path)))
    for index, row in enumerate(dataset):
        yield index, dict(row)


def require_fields(row: dict[str, Any], fields: Iterable[str], where: RowRef) -> None:
    """Refuse a row where one of ``fields`` is absent, null or an empty string / list."""
    for name in fields:
        if name not in row or row[name] is None:
            # columnar readers fill a row's absent columns with null: list what it really has
            present = ", ".join(sorted(k for k, v in row.items() if v is not None)) or "(none)"
            raise where.error(name, "is missing",
                              f"Add a '{name}' column to every row (this row has: {present})")
        if isinstance(row[name], (str, list)) and not _non_empty(row[name]):
            raise where.error(name, "is empty", f"Give every row a non-empty '{name}' or drop the row")


def _non_empty(value: str | list) -> bool:
    return bool(value.strip()) if isinstance(value, str) else bool(value)


def _open(path: Path):
    # imported here: `datasets` is slow to import and only reading data needs it
    import datasets

    if not path.exists():
        raise DataError("no such file", file=str(path), hint="Check the path in the recipe's data section")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError("the file is empty", file=str(path), hint="Point the recipe at a file with data")
    if path.is_dir():
        return _load(lambda: datasets.load_from_disk(str(path)), path)
    builder = FORMATS.get(path.suffix.lower())
    if builder is None:
        raise DataError(f"unknown data format '{path.suffix or '(no suffix)'}'", file=str(path),
                        hint=f"Use one of {', '.join(FORMATS)} or a folder saved by Dataset.save_to_disk")
    if builder == "json":
        _check_json(path)
    if builder == "arrow":
        return _load(lambda: datasets.Dataset.from_file(str(path)), path)
    return _load(lambda: datasets.load_dataset(builder, data_files=str(path), split="train"), path)


def _keep_images_encoded(table):
    from datasets import Image

    for name, feature in table.features.items():
        if isinstance(feature, Image):
            table = table.cast_column(name, Image(decode=False))
    return table


def _load(open_fn, path: Path):
    try:
        return open_fn()
    except Exception as exc:  # name the file, not a traceback from deep inside pyarrow
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise DataError(f"cannot read this file ({type(exc).__name__}: {reason})", file=str(path),
                        hint="Check that it is a valid file of its format and that every row of a "
                             "column has the same type") from exc


def _check_json(path: Path) -> None:
    """Find a malformed JSON line before ``datasets`` reports it without a line number.

    A ``.json`` file may hold one document (a list of rows) or, like ``.jsonl``, one object
    per line; only when it is not one valid document are its lines checked.
    """
    if path.suffix.lower() == ".json":
        try:
            with path.open(encoding="utf-8") as handle:
                json.load(handle)
            return
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # perhaps JSON lines: the line check below names the bad line
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _utf8(raw, number, path)
            if line.strip():
                _check_json_line(line, number, path)


def _utf8(raw: bytes, number: int, path: Path) -> str:
    """A line as text; other encodings (Latin-1, UTF-16) are named, not a traceback."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = f"byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line"
        raise DataError(f"line {number} is not valid UTF-8 ({bad})", file=str(path),
                        hint="Save the file as UTF-8") from None


def _check_json_line(line: str, number: int, path: Path) -> None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at line {number}, column {exc.colno}: {exc.msg}", file=str(path),
                        hint="Fix that line; each line must hold one JSON object") from exc
    if not isinstance(value, dict):
        raise DataError(f"line {number} holds a JSON {type(value).__name__}, not an object",
                        file=str(path), hint="Write one JSON object per line")
