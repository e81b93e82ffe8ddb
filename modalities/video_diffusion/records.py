"""Reading a local table of video pairs into validated records.

A record is a plain dict::

    {"sample_id": "pairs.jsonl#3", "prompt": str,
     "videos": [path or bytes, ...], "video_fields": [column, ...],  # winner first
     "digests": [hex, ...],                                 # the clips' content: the cache key
     "fields": {name: float}, "file": "data/pairs.jsonl", "row": 3}

Every clip is read once here, as training will read it (the frames picked from it, the pair's
one frame size), so a clip that is missing, unreadable, too short or of another size than its
pair's fails now, naming file, row and field, not at step 1000. Clips given as paths stay
paths: a record stays small however long its clips.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.modalities.media_cells import content_digest
from mmalign.errors import DataError
from mmalign.registry import datasets as dataset_registry

from mmalign.modalities.image_diffusion.records import read_rows, table_file
from mmalign.modalities.video_diffusion import clips
from mmalign.modalities.video_diffusion.options import VideoOptions
from mmalign.modalities.video_diffusion.schemas import SCORE
from mmalign.modalities.video_diffusion.weighting import videodpo_weight

NAMESPACE = "video_diffusion"


def qualified(schema: str) -> str:
    """A bare schema name means this modality's schema when it has one."""
    mine = f"{NAMESPACE}:{schema}"
    return mine if ":" not in schema and mine in dataset_registry else schema


def load_records(path: str, schema: str, options: VideoOptions, *, checks: RowChecks | None = None) -> list[dict]:
    """Validated records of ``path`` under ``schema``; with ``data.on_bad_row: skip`` a bad row
    is dropped and counted and the good ones kept."""
    parse = dataset_registry.get(qualified(schema))
    path = table_file(path)
    checks = checks or RowChecks()
    records: list[dict] = []
    name = Path(path).name
    for index, row in checks.unique(enumerate(read_rows(path))):
        where = RowRef(path, index)
        with checks.row():
            for k, candidate in enumerate(parse(row, where)):
                records.append(_record(candidate, where, f"{name}#{index}" + (f".{k}" if k else ""), options))
    if not records:
        raise DataError("no usable rows", file=path,
                        hint=f"Counts: {dict(checks.counts) or 'empty file'}; check the schema and the data")
    return records


def _record(candidate: dict[str, Any], where: RowRef, sample_id: str, options: VideoOptions) -> dict[str, Any]:
    if not options.allow_empty_captions and not candidate["prompt"].strip():
        raise where.error(candidate["prompt_field"], "is empty",
                          "Give the row a caption, or set model.options.allow_empty_captions: true")
    fields = candidate["video_fields"]
    sources = [clips.video_source(v, where, f) for v, f in zip(candidate["videos"], fields)]
    clips.pair_frames(sources, fields, where, options.num_frames, options.sample_fps)  # read and checked
    return {"sample_id": sample_id, "prompt": candidate["prompt"], "videos": sources, "video_fields": fields,
            "digests": [content_digest(s) for s in sources],
            "fields": pair_fields(candidate["fields"], where, options), "file": where.file, "row": where.row}


def pair_fields(fields: dict[str, float], where: RowRef, options: VideoOptions) -> dict[str, float]:
    """The row's numeric fields; with ``videodpo_alpha``, ``score`` replaced by VideoDPO's pair
    weight (the column as given kept as ``score_raw``)."""
    if options.videodpo_alpha is None:
        return dict(fields)
    if SCORE not in fields or fields[SCORE] <= 0:
        got = "has none" if SCORE not in fields else f"is {fields[SCORE]!r}"
        raise where.error(SCORE, f"model.options.videodpo_alpha weights pairs by their score, but this row {got}",
                          "Give every row a positive score, or unset model.options.videodpo_alpha")
    weight = videodpo_weight(fields[SCORE], options.videodpo_alpha, options.videodpo_scale)
    return {**fields, f"{SCORE}_raw": fields[SCORE], SCORE: weight}

