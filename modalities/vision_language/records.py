"""Reading a data file into validated records: plain dicts, one per preference pair.

A record holds ``sample_id`` (``<file name>#<row>`` or ``#<row>.<k>`` when a row gives several
pairs), where it came from (``file``, ``row``), the prompt as chat ``messages``, its
``images`` (as given: paths, bytes or PIL), ``videos`` and ``audios`` (paths or bytes), ``chosen`` /
``rejected`` text (an unpaired row: ``completion`` and ``label``), ``fields`` (the row's
numeric columns, ``margin``) and the optional extras of
:mod:`~mmalign.modalities.vision_language.schemas`. Every image and clip is decoded
once here so a broken one fails now, naming file, row and field, not hours into a run.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Any, Callable

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.errors import ConfigError, DataError
from mmalign.modalities.tokens.records import read_records
from mmalign.modalities.vision_language import schemas as _schemas  # noqa: F401  (registers the schemas)
from mmalign.modalities.vision_language.encoding import encode_pair, to_messages
from mmalign.modalities.vision_language.images import open_image
from mmalign.modalities.vision_language.media import Sampling, open_audio, open_clip, open_media

#: extra single images a pair may carry, each standing in for the row's one image
EXTRA_IMAGES = ("rejected_image", "retrieved_image")
#: an extra clip standing in for the row's one clip on the rejected side (ms-swift ``rejected_videos``)
EXTRA_VIDEOS = ("rejected_video",)
#: an extra sound standing in for the row's one sound on the rejected side (ms-swift ``rejected_audios``)
EXTRA_AUDIOS = ("rejected_audio",)


def detect_schema(row: dict[str, Any], where: RowRef) -> str:
    """The schema a row's columns match, for recipes that leave ``data.schema`` empty."""
    columns = set(row)
    for name, required in (("rlhf_v", {"text", "image"}), ("vlfeedback", {"completions", "prompt"}),
                           ("rlaif_v", {"question", "image", "chosen", "rejected"}),
                           ("video_qa", {"question", "video", "chosen", "rejected"}),
                           ("video_unpaired", {"question", "video", "response", "label"}),
                           ("llamafactory", {"conversations", "chosen", "rejected"}),
                           ("swift", {"messages", "rejected_response"}),
                           ("vl_conversational", {"prompt", "chosen", "rejected"})):
        if required <= columns:
            return f"vision_language:{name}"
    raise DataError(f"cannot tell the data schema from the columns {sorted(columns)}", file=where.file, row=0,
                    hint="Set data.schema to one of rlaif_v, vl_conversational, rlhf_v, vlfeedback, video_qa, "
                         "video_unpaired, llamafactory, swift")


def load_records(path: str, schema: str | None, *, encode: Callable[[dict], None] | None = None,
                 repairs: Counter | None = None, checks: RowChecks | None = None,
                 sampling: Sampling = Sampling()) -> list[dict[str, Any]]:
    """Validated records of ``path`` (:func:`~mmalign.modalities.tokens.records.read_records`);
    ``encode(record)``, when given, tokenizes each one."""
    name = os.path.basename(path)

    def make(pair: dict[str, Any], where: RowRef, k: int, count: int) -> dict[str, Any]:
        record = make_record(pair, where, f"{name}#{where.row}" if count == 1 else f"{name}#{where.row}.{k}", repairs,
                             sampling)
        if encode is not None:
            encode(record)
        return record

    return read_records(path, schema, guess=detect_schema, make=make, checks=checks)


def make_record(pair: dict[str, Any], where: RowRef, sample_id: str, repairs: Counter | None = None,
                sampling: Sampling = Sampling()) -> dict[str, Any]:
    """Check one pair (images and clips decode, placeholders match them, responses not empty)."""
    images, videos, audios = (list(pair.get(key) or []) for key in ("images", "videos", "audios"))
    for k, image in enumerate(images):
        open_image(image, where, f"images[{k}]" if len(images) > 1 else "image", repairs)
    for k, video in enumerate(videos):
        open_clip(video, where, f"videos[{k}]" if len(videos) > 1 else "video", sampling)
    for k, audio in enumerate(audios):
        open_audio(audio, where, f"audios[{k}]" if len(audios) > 1 else "audio", sampling)
    record = {"sample_id": sample_id, "file": where.file, "row": where.row,
              "messages": to_messages(pair["prompt"], len(images), where, n_videos=len(videos), n_audios=len(audios)),
              "images": images, "videos": videos, "audios": audios}
    sides = ("completion",) if "completion" in pair else ("chosen", "rejected")
    for side in sides:
        text = pair.get(side)
        if not isinstance(text, str) or not text.strip():
            raise where.error(side, "is empty", f"Give a non-empty {side} response or drop the row")
        record[side] = text
    if "completion" in pair:  # an unpaired row (KTO): one completion and its label
        record["label"] = bool(pair["label"])
    for key in EXTRA_IMAGES:
        if pair.get(key) is not None:
            if len(images) != 1:
                raise where.error(key, f"needs a row with exactly one image (this row has {len(images)})",
                                  "Use single-image rows for mDPO / Re-Align extra images")
            open_image(pair[key], where, key, repairs)
            record[key] = pair[key]
    for key in EXTRA_VIDEOS:
        if pair.get(key) is not None:
            if len(videos) != 1 or images:
                raise where.error(key, f"needs a row with exactly one clip and no image (this row has {len(videos)} "
                                       f"clips and {len(images)} images)", "Use single-clip rows for rejected_video")
            open_clip(pair[key], where, key, sampling)
            record[key] = pair[key]
    for key in EXTRA_AUDIOS:
        if pair.get(key) is not None:
            if len(audios) != 1 or images or videos:
                raise where.error(key, f"needs a row with exactly one sound and nothing else (this row has "
                                       f"{len(audios)} sounds)", "Use single-sound rows for rejected_audio")
            open_audio(pair[key], where, key, sampling)
            record[key] = pair[key]
    for key in ("chosen_spans", "rejected_spans"):
        if key in pair:
            record[key] = pair[key]
    record["fields"] = dict(pair.get("fields") or {})
    return record


def encoder(processor, max_length: int | None, repairs: Counter | None = None,
            truncation: str = "keep_start", sampling: Sampling = Sampling()) -> Callable[[dict], None]:
    """A function that tokenizes a record in place (adds ``prompt_ids`` etc.)."""
    if processor is None:
        raise ConfigError("the vision_language modality has no processor yet; call load_policy first")

    def encode(record: dict[str, Any]) -> None:
        where = RowRef(record["file"], record["row"])
        media = open_media(record, sampling)
        chosen, rejected = (record["completion"],) * 2 if "completion" in record else (record["chosen"], record["rejected"])
        pair = encode_pair(processor, record["messages"], media.images, chosen, rejected, max_length, where,
                           repairs, truncation, clips=media.clips, audios=list(media.audios),
                           audio_rate=sampling.audio_rate)
        if "completion" in record:
            record.update(prompt_text=pair.prompt_text, prompt_ids=pair.prompt_ids, completion_ids=pair.chosen_ids)
            return
        record.update(prompt_text=pair.prompt_text, prompt_ids=pair.prompt_ids, chosen_ids=pair.chosen_ids, rejected_ids=pair.rejected_ids,
                      chosen_offsets=pair.chosen_offsets, rejected_offsets=pair.rejected_offsets)

    return encode
