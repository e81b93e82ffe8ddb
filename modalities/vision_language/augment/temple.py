"""TEMPLE's temporal preference pairs (Li et al. 2025, "TEMPLE: Temporal Preference Learning of
Video LLMs via Difficulty Scheduling and Pre-SFT Alignment", arXiv:2503.16929, section 3).

A video LLM that answers the same on a clip and on a temporally broken copy of it is not
reading time. Per clip question (one clip, a question, optionally the known answer):

1. *Clean answer*: the model answers the question on the clip (greedy). The chosen answer.
2. *Perturbed answers*: the clip is perturbed, keeping its frame count and timing
   (:mod:`~mmalign.modalities.vision_language.clip_perturb`), and the model answers again;
   each such answer is a rejected one. The pair's prompt is the *clean* clip and the
   question: training raises the clean answer over the answer a broken clip provoked, both
   conditioned on the clean clip.
3. *Filters*: a pair whose two answers are equal (up to case and whitespace) teaches
   nothing and is dropped; where the row gives its true ``answer``, a clean answer that does
   not match it (``judge``) drops every pair of the row, so no wrong answer is ever chosen.

*Magnitude* ``m`` (an integer >= 2, TEMPLE's 2 / 4 / 8 / 16) sets how much of the clip's
order is destroyed, the same way for every kind, on a clip of ``T`` frames:

* ``drop``: only ``max(1, T // m)`` random frames are kept, each dropped frame showing the last
  kept frame before it;
* ``reverse``: the clip is cut into ``min(m, T)`` runs of frames and the order of the runs is
  reversed (each run plays forward);
* ``shuffle``: the same runs in a random order other than the original;
* ``speed`` (not in TEMPLE): the clip played ``m`` times as fast, its end held.

TEMPLE's released code cuts groups of ``T // m`` segments (the last group may be extra), and
can perturb per-segment captions instead of frames; here the frames are perturbed, in exactly
``min(m, T)`` runs as equal as possible. With ``m >= T`` reverse and shuffle act frame by
frame, so on short clips large magnitudes can give the same clip: a perturbed clip that shows
the frames of one already answered for that row (or the clean clip's) is skipped and counted.
Its length filters (a drop's rejected answer shorter than the chosen one, reverse / shuffle
answers within 1.5x of its length) are not applied.

*Difficulty schedule.* A large perturbation gives an easy pair (the rejected answer is far off);
a small one a hard pair. TEMPLE trains from large to small magnitude (its stages 16, 8, 4, 2).
Every pair carries its magnitude in ``fields["perturbation_magnitude"]``; :func:`curriculum`
orders pairs from large to small, and :func:`write_pairs` writes them, in the order given, as
``video_qa`` rows whose ``perturbation_magnitude`` column the schema keeps as a field. A recipe
with ``data.order_by: -perturbation_magnitude`` and ``train.shuffle: false`` trains on them
from large to small whatever the file's order (:func:`mmalign.train.order.sort_rows`).

The answers are greedy (TEMPLE samples at temperature 0.7), so a pair depends only on the
model, the clip and the per-row draws ``row_generator(seed, sample_id, 0, "temple/<kind>/<m>")``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from typing import Any, Callable, Sequence

import torch
from torch import nn

from mmalign.data.io import RowRef, read_rows, require_fields
from mmalign.errors import ConfigError, DataError
from mmalign.modalities.vision_language import clip_perturb
from mmalign.modalities.vision_language.augment import common
from mmalign.modalities.vision_language.images import resolve_path
from mmalign.modalities.vision_language.media import open_clip
from mmalign.modalities.vision_language.records import make_record
from mmalign.modality import row_generator

log = logging.getLogger("mmalign")

#: TEMPLE's perturbations and magnitudes (its preference data mixes all three kinds per stage)
DEFAULT_KINDS = ("reverse", "shuffle", "drop")
DEFAULT_MAGNITUDES = (16, 8, 4, 2)
#: the record field (and written column) that holds a pair's perturbation magnitude
FIELD = "perturbation_magnitude"
#: what each question that cannot make a pair is counted as (see :func:`temple`)
DROPS = ("empty_answer", "wrong_clean_answer", "repeated_clip", "same_answer")
QUESTION_KEYS = ("sample_id", "file", "row", "video", "question")


# -- questions ------------------------------------------------------------------------------

def read_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The clip questions of a data file: each row has one clip (``video``, or a ``videos``
    list of one; a path relative to the file, or bytes), a ``question`` and optionally the
    known ``answer``. Returns ``{"sample_id": "<file name>#<row>", "file", "row", "video",
    "question", "answer"}`` (``answer`` None when unknown)."""
    path = os.fspath(path)
    name = os.path.basename(path)
    questions = []
    for index, row in read_rows(path):
        where = RowRef(path, index)
        require_fields(row, ("question",), where)
        videos = row.get("videos") or ([row["video"]] if row.get("video") is not None else [])
        if isinstance(videos, (str, bytes, dict)):
            videos = [videos]
        if len(videos) != 1:
            raise where.error("video", f"needs exactly one clip (the row has {len(videos)})",
                              "Give each row one 'video' (a path relative to the data file)")
        answer = row.get("answer")
        for field, value in (("question", row["question"]), ("answer", answer)):
            if value is not None and not isinstance(value, str):
                raise where.error(field, f"must be text (got {type(value).__name__})", f"Write the {field} as text")
        questions.append({"sample_id": f"{name}#{index}", "file": path, "row": index, "video": videos[0],
                          "question": row["question"], "answer": answer if answer and answer.strip() else None})
    return questions


# -- perturbation by magnitude -------------------------------------------------------------

def frame_order(count: int, kind: str, magnitude: int, generator: torch.Generator) -> list[int]:
    """The source frame each of ``count`` frames shows after perturbation ``kind`` at
    ``magnitude`` (see the module docstring): the perturbation applied to the frame indices."""
    index = torch.arange(count)
    if kind == "drop":
        keep = max(1, count // magnitude)
        order = clip_perturb.drop(index, generator, (count - keep) / count)
    elif kind == "reverse":
        order = clip_perturb.reverse(index, segments=magnitude)
    elif kind == "shuffle":
        order = clip_perturb.shuffle(index, generator, segments=magnitude)
    elif kind == "speed":
        order = clip_perturb.speed(index, float(magnitude))
    else:
        raise ConfigError(f"unknown clip perturbation {kind!r}; use one of {', '.join(clip_perturb.KINDS)}")
    return order.tolist()


# -- answers --------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Lower case, runs of whitespace as one space, punctuation at either end dropped."""
    return " ".join(text.lower().split()).strip(" .,;:!?'\"")


def answers_match(answer: str, truth: str) -> bool:
    """Whether a generated answer states the known one: equal after :func:`normalise`."""
    return normalise(answer) == normalise(truth)


def _answer(modality, model: nn.Module, question: dict[str, Any], clip, seed: int) -> str:
    """The model's greedy answer to the question on ``clip`` (an opened :class:`Clip`)."""
    prompt = {"prompt": question["question"], "videos": [clip], "source": question["file"]}
    return modality.sample(model, [prompt], 1, seeds=[seed])[0][0].strip()


# -- the builder ----------------------------------------------------------------------------

def temple(modality, model: nn.Module, questions: Sequence[dict[str, Any]], *,
           kinds: Sequence[str] = DEFAULT_KINDS, magnitudes: Sequence[int] = DEFAULT_MAGNITUDES, seed: int = 0,
           judge: Callable[[str, str], bool] = answers_match,
           counts: Counter | None = None) -> list[dict[str, Any]]:
    """TEMPLE pairs (module docstring) from ``questions`` (:func:`read_questions`): for each
    question, each magnitude (in the order given) and each kind, the clean answer chosen over
    the answer on the perturbed clip, prompted with the clean clip.

    Every candidate (question x kind x magnitude) ends in exactly one of ``counts``: ``pairs``
    or a drop, ``empty_answer`` (the clean or perturbed answer is empty), ``wrong_clean_answer``
    (``judge(clean answer, answer)`` is false for a row that gives its ``answer``),
    ``repeated_clip`` (the perturbed clip shows the same frames as the clean one or one already
    answered for the row) or ``same_answer`` (equal up to case and whitespace). Pass a
    ``Counter`` as ``counts`` to read them; ``counts["candidates"]`` is their sum.

    Each pair is a validated record (``sample_id`` ``<question id>/temple/<kind>/<m>``) with
    ``fields["perturbation_magnitude"] = m`` and ``augment`` holding the method, kind,
    magnitude, the frame order shown and whether the clean answer was checked."""
    common.require_processor(modality, "temple")
    _check_questions(questions)
    plan = _plan(kinds, magnitudes)
    counts = Counter() if counts is None else counts
    sampling = modality.options.sampling
    out: list[dict[str, Any]] = []
    with common.evaluating(model):
        for question in questions:
            where = RowRef(question["file"], question["row"])
            counts["candidates"] += len(plan)
            clean = open_clip(question["video"], where, "video", sampling)
            chosen = _answer(modality, model, question, clean, seed)
            truth = question.get("answer")
            if not chosen:
                counts["empty_answer"] += len(plan)
                continue
            if truth is not None and not judge(chosen, truth):
                counts["wrong_clean_answer"] += len(plan)
                continue
            count = clean.frames.shape[0]
            seen = {tuple(range(count))}
            for kind, magnitude in plan:
                generator = row_generator(seed, question["sample_id"], 0, f"temple/{kind}/{magnitude}")
                order = frame_order(count, kind, magnitude, generator)
                if tuple(order) in seen:
                    counts["repeated_clip"] += 1
                    continue
                seen.add(tuple(order))
                rejected = _answer(modality, model, question, clean._replace(frames=clean.frames[order]), seed)
                if not rejected:
                    counts["empty_answer"] += 1
                elif common.same_text(rejected, chosen):
                    counts["same_answer"] += 1
                else:
                    out.append(_pair(question, where, chosen, rejected, kind, magnitude, order, truth is not None,
                                     sampling))
                    counts["pairs"] += 1
    log.info("temple: %d pairs from %d candidates of %d clip questions (dropped: %s)", counts["pairs"],
             counts["candidates"], len(questions), ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in DROPS))
    return out


def _pair(question: dict[str, Any], where: RowRef, chosen: str, rejected: str, kind: str, magnitude: int,
          order: list[int], checked: bool, sampling) -> dict[str, Any]:
    pair = {"prompt": question["question"], "images": [], "videos": [question["video"]], "chosen": chosen,
            "rejected": rejected, "fields": {FIELD: float(magnitude)}}
    record = make_record(pair, where, f"{question['sample_id']}/temple/{kind}/{magnitude}", sampling=sampling)
    record["augment"] = {"method": "temple", "kind": kind, "magnitude": magnitude, "frame_order": order,
                         "question": question["question"], "answer_checked": checked}
    return record


def _check_questions(questions: Sequence[dict[str, Any]]) -> None:
    for index, question in enumerate(questions):
        missing = [key for key in QUESTION_KEYS if not isinstance(question, dict) or key not in question]
        if missing:
            raise ConfigError(f"temple: questions[{index}] has no {', '.join(missing)}; pass clip questions read "
                              "with temple.read_questions(path)")


def _plan(kinds: Sequence[str], magnitudes: Sequence[int]) -> list[tuple[str, int]]:
    """``(kind, magnitude)`` candidates, magnitude by magnitude in the order given."""
    kinds, magnitudes = list(kinds), list(magnitudes)
    unknown = [k for k in kinds if k not in clip_perturb.KINDS]
    if not kinds or unknown or len(set(kinds)) != len(kinds):
        raise ConfigError(f"temple kinds must be distinct names among {', '.join(clip_perturb.KINDS)}; got {kinds!r}")
    if not magnitudes or len(set(magnitudes)) != len(magnitudes) or any(
            isinstance(m, bool) or not isinstance(m, int) or m < 2 for m in magnitudes):
        raise ConfigError(f"temple magnitudes must be distinct integers >= 2 (TEMPLE's 2, 4, 8, 16); "
                          f"got {magnitudes!r}")
    return [(kind, magnitude) for magnitude in magnitudes for kind in kinds]


# -- the difficulty schedule ----------------------------------------------------------------

def curriculum(records: Sequence[dict[str, Any]], field: str = FIELD, seed: int | None = None) -> list[dict[str, Any]]:
    """The records ordered from the largest ``fields[field]`` to the smallest: TEMPLE's schedule,
    large perturbations (easy pairs) first. Records of equal value keep their order (a stable
    sort), or with ``seed`` are shuffled among themselves by a hash of ``(seed, sample_id)``
    (TEMPLE shuffles within a stage)."""
    values = []
    for record in records:
        value = (record.get("fields") or {}).get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            what = "has none" if value is None else f"is {value!r}"
            raise DataError(f"curriculum: row '{record.get('sample_id')}': field '{field}' {what}; every row "
                            "needs a finite number there (TEMPLE pairs carry perturbation_magnitude)")
        values.append(float(value))
    if seed is None:
        keys = [(-value,) for value in values]
    else:
        keys = [(-value, _unit(seed, str(record.get("sample_id")))) for value, record in zip(values, records)]
    order = sorted(range(len(values)), key=keys.__getitem__)
    return [records[i] for i in order]


def _unit(seed: int, sample_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}|curriculum|{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2 ** 64


def write_pairs(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> str:
    """Write TEMPLE pairs, in the order given, as ``video_qa`` JSON lines: ``video`` (the clean
    clip, relative to the new file), ``question``, ``chosen``, ``rejected``,
    ``perturbation_magnitude`` (read back as a field) and ``perturbation`` (the kind)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    lines = []
    for record in records:
        meta = record.get("augment") or {}
        if meta.get("method") != "temple":
            raise ConfigError(f"write_pairs: row '{record.get('sample_id')}' is not a TEMPLE pair; write the "
                              "records temple() returned")
        video = record["videos"][0]
        if not isinstance(video, str):
            raise DataError(f"write_pairs: row '{record['sample_id']}' holds its clip as bytes, which a JSON line "
                            "cannot carry", hint="Save the clips as files and read the questions from paths")
        video = os.path.relpath(resolve_path(video, RowRef(record["file"], record["row"])), folder)
        lines.append(json.dumps({"video": video, "question": meta["question"], "chosen": record["chosen"],
                                 "rejected": record["rejected"], FIELD: record["fields"][FIELD],
                                 "perturbation": meta["kind"]}) + "\n")
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    return path
