"""Reading a local preference table into validated image-diffusion records.

A record is a plain dict::

    {"sample_id": "pairs.parquet#12", "prompt": str, "images": [bytes, ...],  # winner first
     "label": float | None, "tie": bool, "file": "data/pairs.parquet", "row": 12,
     "fields": {name: float}}  # the row's other numeric columns (per-row weights, margins)

Images are kept encoded (bytes) and decoded again when collated, so a record stays small
and hashable for the cache.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.errors import DataError
from mmalign.registry import datasets as dataset_registry

from mmalign.modalities.image_diffusion.images import decode_rgb, image_bytes
from mmalign.modalities.image_diffusion.options import ImageOptions

NAMESPACE = "image_diffusion"


def table_file(path: str) -> str:
    """The table to read: ``path`` itself, or an image folder's ``metadata.jsonl`` (or
    ``.parquet`` / ``.csv``) whose image columns hold paths relative to the folder."""
    p = Path(path)
    if not p.is_dir():
        return path
    for name in ("metadata.jsonl", "metadata.parquet", "metadata.csv"):
        if (p / name).is_file():
            return str(p / name)
    raise DataError("the folder has no metadata.jsonl, metadata.parquet or metadata.csv", file=path,
                    hint="Put a metadata file beside the images with one row per example")


def read_rows(path: str) -> Iterable[dict[str, Any]]:
    """Rows of a local parquet / jsonl / json / arrow / csv file (images kept as bytes)."""
    from mmalign.data import io

    return (row for _, row in io.read_rows(path))


def load_records(path: str, schema: str, options: ImageOptions, *,
                 count_truncated: Callable[[str], bool] | None = None,
                 checks: RowChecks | None = None) -> tuple[list[dict], Counter]:
    """Validated records of ``path`` under ``schema`` and the counts of what was dropped
    (ties) and repaired. Exact duplicate rows are dropped and each row is checked under
    ``checks.row()``, so with ``data.on_bad_row: skip`` a bad row is dropped and counted and
    the good ones kept."""
    parse = dataset_registry.get(qualified(schema))
    path = table_file(path)
    checks = checks or RowChecks()
    counts: Counter = Counter()
    records: list[dict] = []
    name = Path(path).name
    for index, row in checks.unique(enumerate(read_rows(path))):
        where = RowRef(path, index)
        with checks.row():
            built, found = _row_records(parse(row, where), where, name, options, count_truncated)
            records.extend(built)
            counts.update(found)  # only for rows kept whole
    if not records:
        raise DataError("no usable rows", file=path,
                        hint=f"Counts: {dict(checks.counts + counts) or 'empty file'}; check the schema and the data")
    return records, counts


def qualified(schema: str) -> str:
    """A bare schema name means this modality's schema when it has one (``pickapic`` ->
    ``image_diffusion:pickapic``); otherwise the registry resolves it."""
    mine = f"{NAMESPACE}:{schema}"
    return mine if ":" not in schema and mine in dataset_registry else schema


def _row_records(candidates: list[dict], where: RowRef, name: str, options: ImageOptions,
                 count_truncated: Callable[[str], bool] | None) -> tuple[list[dict], Counter]:
    """The records of one row and what was dropped or repaired in it, or a DataError."""
    found: Counter = Counter()
    records = []
    for k, candidate in enumerate(candidates):
        _check_caption(candidate, where, options.allow_empty_captions)
        record = _record(candidate, where, f"{name}#{where.row}" + (f".{k}" if k else ""), found)
        if record["tie"] and not options.keep_ties:
            found["dropped: tie (keep_ties is off)"] += 1
            continue
        if count_truncated is not None and count_truncated(record["prompt"]):
            found["repaired: caption truncated"] += 1
        split = options.pairing == "unpaired" and record["label"] is None
        records.extend(_split(record) if split else [record])
    return records, found


def _check_caption(candidate: dict, where: RowRef, allow_empty: bool) -> None:
    """An empty caption is more often a broken row than a wish for unconditional training."""
    if not allow_empty and not candidate["prompt"].strip():
        raise where.error(candidate["prompt_field"], "is empty",
                          "Give the row a caption, or set model.options.allow_empty_captions: true "
                          "to train such rows unconditionally")


def _record(candidate: dict, where: RowRef, sample_id: str, counts: Counter) -> dict:
    images = []
    for value, field in zip(candidate["images"], candidate["image_fields"]):
        data = image_bytes(value, where, field)
        _, repaired_from = decode_rgb(data, where, field)
        if repaired_from is not None:
            counts[f"repaired: {repaired_from} to RGB"] += 1
        images.append(data)
    return {"sample_id": sample_id, "prompt": candidate["prompt"], "images": images, "label": candidate["label"],
            "tie": candidate["tie"], "file": where.file, "row": where.row, "fields": dict(candidate["fields"])}


def _split(record: dict) -> list[dict]:
    """A pair as two unpaired rows (Diffusion-KTO trains on single images with labels)."""
    win, lose = record["images"]
    return [dict(record, sample_id=record["sample_id"] + ".w", images=[win], label=1.0),
            dict(record, sample_id=record["sample_id"] + ".l", images=[lose], label=0.0)]
