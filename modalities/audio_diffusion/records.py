"""Reading a local table of audio preferences into validated pair records.

A record is a plain dict::

    {"sample_id": "pairs.jsonl#3", "prompt": str, "lyrics": str,
     "audios": [path or bytes, path or bytes], "audio_fields": [column, column],  # winner first
     "digests": [hex, hex], "fields": {name: float, "rank_weight": float},
     "file": "data/pairs.jsonl", "row": 3}

Every clip is read once here (:mod:`mmalign.modalities.audio_io`): a clip that is missing,
undecodable, silent or too short fails now, naming file, row and field; clipping and padding
are counted. Ranked rows become pairs (``pairs.py``), ``#3.k`` for the row's ``k``-th pair.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.modalities.media_cells import content_digest
from mmalign.errors import DataError
from mmalign.registry import datasets as dataset_registry

from mmalign.modalities import audio_io
from mmalign.modalities.audio_diffusion.options import AudioOptions
from mmalign.modalities.audio_diffusion.pairs import WEIGHT, ranked_pairs
from mmalign.modalities.image_diffusion.records import read_rows, table_file

NAMESPACE = "audio_diffusion"


def qualified(schema: str) -> str:
    mine = f"{NAMESPACE}:{schema}"
    return mine if ":" not in schema and mine in dataset_registry else schema


def load_records(path: str, schema: str, options: AudioOptions, *, checks: RowChecks | None = None) -> list[dict]:
    """Validated pair records of ``path`` under ``schema``; with ``data.on_bad_row: skip`` a
    bad row is dropped and counted."""
    parse = dataset_registry.get(qualified(schema))
    path, checks = table_file(path), checks or RowChecks()
    records: list[dict] = []
    name = Path(path).name
    for index, row in checks.unique(enumerate(read_rows(path))):
        where = RowRef(path, index)
        with checks.row():
            for candidate in parse(row, where):
                records += _row_pairs(candidate, where, f"{name}#{index}", options, checks.counts)
    if not records:
        raise DataError("no usable rows", file=path,
                        hint=f"Counts: {dict(checks.counts) or 'empty file'}; check the schema and the data")
    return records


def _row_pairs(candidate: dict[str, Any], where: RowRef, sample_id: str, options: AudioOptions,
               counts: Counter) -> list[dict]:
    if not options.allow_empty_captions and not candidate["prompt"].strip():
        raise where.error(candidate["prompt_field"], "is empty",
                          "Give the row a caption, or set model.options.allow_empty_captions: true")
    check = audio_io.AudioCheck(options.seconds, options.min_seconds)
    fields = candidate["audio_fields"]
    sources = [audio_io.audio_source(v, where, f) for v, f in zip(candidate["audios"], fields)]
    for source, field in zip(sources, fields):
        wave, rate = audio_io.read_audio(source, where, field)
        audio_io.check_clip(wave, rate, check, where, field, counts)
    digests = [content_digest(s) for s in sources]
    if "scores" not in candidate:
        return [_pair(candidate, where, sample_id, sources, digests, (0, 1, 1.0))]
    found = ranked_pairs(candidate["scores"], options.pairing)
    if not found:
        counts["skipped: ranked row with tied scores"] += 1
    return [_pair(candidate, where, sample_id + (f".{k}" if k else ""), sources, digests, p)
            for k, p in enumerate(found)]


def _pair(candidate: dict, where: RowRef, sample_id: str, sources: list, digests: list,
          pair: tuple[int, int, float]) -> dict:
    w, l, weight = pair
    fields = candidate["audio_fields"]
    return {"sample_id": sample_id, "prompt": candidate["prompt"], "lyrics": candidate.get("lyrics", ""),
            "audios": [sources[w], sources[l]], "audio_fields": [fields[w], fields[l]],
            "digests": [digests[w], digests[l]], "fields": {**candidate["fields"], WEIGHT: weight},
            "file": where.file, "row": where.row}


def record_waves(record: dict, rate: int, channels: int, options: AudioOptions):
    """A record's clips as the model takes them, ``[2, channels, samples]`` (winner first)."""
    import torch

    check = audio_io.AudioCheck(options.seconds, options.min_seconds)
    where = RowRef(record["file"], record["row"])
    return torch.stack([audio_io.model_wave(s, rate, channels, check, where, f)
                        for s, f in zip(record["audios"], record["audio_fields"])])
