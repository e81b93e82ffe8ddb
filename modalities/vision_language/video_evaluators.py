"""Video evaluators of the vision-language modality, registered by name.

Each evaluator is ``fn(modality, model, data, *, seed=0, **params) -> dict[str, float]``, like
the image evaluators of :mod:`~mmalign.modalities.vision_language.evaluators`: it reads
``data`` (a local file of rows, each naming one clip in ``video``: a path relative to the data
file, or the clip's bytes), has the model answer greedily with ``modality.sample`` and scores
the answers with plain functions. No API, no judge model.

* ``video_temporal``: questions about the order of events and the direction of motion, rows
  ``{"video", "question", "answer", "choices"?: [...], "kind"?: "order" | "direction" | ...}``,
  scored by accuracy (:func:`temporal_scores`) overall and per ``kind``, each with its count and
  a 95% Wilson interval (:func:`mmalign.intervals.wilson_interval`).
* ``video_chair``: CHAIR_s / CHAIR_i of clip captions, rows ``{"video", "objects": [names],
  "prompt"?}``, by the image evaluator's :func:`~.hallucination.chair` and object vocabulary.
* ``video_pope``: POPE yes/no existence questions about each clip, rows ``{"video", "objects"}``,
  built by :func:`~.hallucination.pope_questions` (``random`` / ``popular`` / ``adversarial``)
  and scored by :func:`~.hallucination.pope_scores`.

The prompts are the image evaluators' own with "image" read as "video". Rows are checked
before the model answers anything (a missing field, a clip file that does not exist, a
question with the wrong placeholders); each clip is then read once, with the modality's frame
sampling (``video_frames`` / ``video_fps``), and every question about it asked. A problem
raises :class:`~mmalign.errors.DataError` naming file, row and field.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Any, Sequence

from mmalign.data.io import RowRef, read_rows, require_fields
from mmalign.errors import ConfigError
from mmalign.intervals import wilson_interval
from mmalign.modalities.vision_language.encoding import to_messages
from mmalign.modalities.vision_language.evaluators import CAPTION_PROMPT, POPE_PROMPT
from mmalign.modalities.vision_language.hallucination import POPE_SETTINGS, chair, pope_questions, pope_scores
from mmalign.modalities.vision_language.images import resolve_path
from mmalign.modalities.vision_language.media import open_clip
from mmalign.modalities.vision_language.objects import load_vocabulary
from mmalign.registry import register_evaluator


def for_video(prompt: str) -> str:
    """An image evaluator's prompt asked about a clip: "image" read as "video"."""
    return prompt.replace("image", "video")


#: "Please describe this video in detail."
VIDEO_CAPTION_PROMPT = for_video(CAPTION_PROMPT)
#: "Is there a {object} in the video? Answer yes or no."
VIDEO_POPE_PROMPT = for_video(POPE_PROMPT)
#: a multiple-choice question: the question, then one choice per line
CHOICES_PROMPT = "{question}\nOptions:\n{options}\nAnswer with one of the options."


# -- scoring ------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, whitespace collapsed: "Left-to-right." -> "left to right"."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def predicted_choice(answer: str, choices: Sequence[str]) -> str | None:
    """The choice the answer mentions first (as whole words, after :func:`normalise`), or None.

    Two choices mentioned at the same place (one the start of the other) go to the longer one:
    with choices "left" and "left to right", "from left to right" predicts "left to right".
    """
    text = f" {normalise(answer)} "
    found = []
    for choice in choices:
        at = text.find(f" {normalise(choice)} ")
        if at >= 0:
            found.append((at, -len(normalise(choice)), choice))
    return min(found)[2] if found else None


def is_correct(answer: str, gold: str, choices: Sequence[str] | None = None) -> bool:
    """Whether an answer matches the gold one: with ``choices``, its :func:`predicted_choice`
    is the gold choice; without, the whole answer equals the gold answer once normalised."""
    if choices:
        predicted = predicted_choice(answer, choices)
        return predicted is not None and normalise(predicted) == normalise(gold)
    return normalise(answer) == normalise(gold)


def accuracy_scores(correct: int, count: int, prefix: str = "") -> dict[str, float]:
    """``accuracy`` with its 95% Wilson interval (``accuracy_low``, ``accuracy_high``),
    ``correct`` and ``count``, each key after ``prefix``."""
    low, high = wilson_interval(correct, count)
    return {f"{prefix}accuracy": correct / count if count else 0.0, f"{prefix}accuracy_low": low,
            f"{prefix}accuracy_high": high, f"{prefix}correct": float(correct), f"{prefix}count": float(count)}


def temporal_scores(answers: Sequence[str], questions: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of ``answers`` to ``questions`` (``{"answer", "choices"?, "kind"?}``) by
    :func:`is_correct`: :func:`accuracy_scores` over all questions, again under ``KIND/`` for
    each kind given, and ``no_choice``, how many answers to multiple-choice questions mention
    none of the choices."""
    total = correct = no_choice = 0
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for answer, question in zip(answers, questions, strict=True):
        choices = question.get("choices")
        right = is_correct(answer, question["answer"], choices)
        no_choice += bool(choices) and predicted_choice(answer, choices) is None
        total, correct = total + 1, correct + right
        if question.get("kind"):
            per_kind[question["kind"]][0] += right
            per_kind[question["kind"]][1] += 1
    scores = accuracy_scores(correct, total)
    for kind in sorted(per_kind):
        scores.update(accuracy_scores(*per_kind[kind], prefix=f"{kind}/"))
    scores["no_choice"] = float(no_choice)
    return scores


# -- reading ------------------------------------------------------------------------------
def read_annotated_clips(path: str | None, evaluator: str = "video_chair") -> list[dict[str, Any]]:
    """Rows ``{"video", "objects", "prompt"?}`` (what the image evaluators read, with a clip
    in place of the image), each with its ``source`` file and ``row`` number."""
    rows = []
    for where, row in _rows(path, evaluator):
        if not isinstance(row.get("objects"), list):
            raise where.error("objects", "must be a list of object names", "Give e.g. [\"dog\", \"bench\"]")
        if row.get("prompt") is not None:
            _check_prompt(row["prompt"], where, "prompt")
        rows.append(_with_source(row, where))
    return rows


def read_temporal_questions(path: str | None) -> list[dict[str, Any]]:
    """Rows ``{"video", "question", "answer", "choices"?, "kind"?}``, each with its ``source``
    file and ``row`` number; ``choices`` (two or more distinct texts) must hold the answer."""
    rows = []
    for where, row in _rows(path, "video_temporal", ("question", "answer")):
        _check_prompt(row["question"], where, "question")
        if not isinstance(row["answer"], str):
            raise where.error("answer", f"must be text, got {type(row['answer']).__name__}",
                              "Give the answer as text, e.g. \"left to right\"")
        if row.get("choices") is not None:
            _check_choices(row["choices"], row["answer"], where)
        kind = row.get("kind")
        if kind is not None and not (isinstance(kind, str) and kind.strip()):
            raise where.error("kind", f"must be a non-empty text, got {kind!r}",
                              "Give e.g. \"order\" or \"direction\", or leave it out")
        rows.append(_with_source(row, where))
    return rows


def _rows(path: str | None, evaluator: str, fields: tuple[str, ...] = ()):
    if not path:
        raise ConfigError(f"{evaluator} needs a data file of clips: set eval.data (or data.eval)")
    for index, row in read_rows(path):
        where = RowRef(str(path), index)
        require_fields(row, ("video", *fields), where)
        _check_video(row["video"], where)
        yield where, row


def _check_video(video: Any, where: RowRef) -> None:
    """A clip named by path must exist (read_clip decodes it, and says what else is wrong,
    when the model is asked about it); bytes and ``datasets`` Video values are read as given."""
    if isinstance(video, str):
        target = resolve_path(video, where)
        if not os.path.isfile(target):
            raise where.error("video", f"video file '{target}' does not exist",
                              "Paths are read from the data file's folder; fix the path or drop the row")
    elif not isinstance(video, (bytes, bytearray, dict)):
        raise where.error("video", f"must be a path or the clip's bytes, got {type(video).__name__}",
                          "Give the clip's path, relative to the data file")


def _check_prompt(prompt: Any, where: RowRef, field: str) -> None:
    """A prompt the model can be asked with the row's one clip (at most one ``<video>``, no ``<image>``)."""
    to_messages(prompt, 0, where, field, n_videos=1)


def _check_choices(choices: Any, answer: str, where: RowRef) -> None:
    if not isinstance(choices, list) or not all(isinstance(c, str) and normalise(c) for c in choices):
        raise where.error("choices", "must be a list of non-empty texts", "Give e.g. [\"left\", \"right\"]")
    names = [normalise(c) for c in choices]
    if len(names) < 2 or len(set(names)) < len(names):
        raise where.error("choices", f"must hold two or more different choices, got {choices!r}",
                          "Give distinct choices (compared in lower case without punctuation), or leave "
                          "them out for a free answer")
    if normalise(answer) not in names:
        raise where.error("answer", f"{answer!r} is not one of the choices {choices!r}",
                          "Make the answer one of the choices (compared in lower case without punctuation)")


def _with_source(row: dict[str, Any], where: RowRef) -> dict[str, Any]:
    return {**row, "source": where.file, "row": where.row}


# -- asking -------------------------------------------------------------------------------
def ask_about_clips(modality, model, rows: Sequence[dict[str, Any]], prompts: Sequence[Sequence[str]],
                    seed: int = 0) -> list[list[str]]:
    """For each row, the greedy answers to its ``prompts`` about its clip, the clip read once
    (with the modality's frame sampling; not at all for a row without prompts). Prompt ``k``
    of the whole run gets seed ``seed + k``, as ``modality.sample`` numbers one call's prompts."""
    answers, offset = [], seed
    for row, texts in zip(rows, prompts, strict=True):
        if not texts:
            answers.append([])
            continue
        clip = open_clip(row["video"], RowRef(row["source"], row["row"]), "video", modality.options.sampling)
        items = [{"prompt": text, "videos": [clip], "source": row["source"]} for text in texts]
        sampled = modality.sample(model, items, 1, seeds=list(range(offset, offset + len(items))))
        answers.append([a[0] for a in sampled])
        offset += len(items)
    return answers


def temporal_prompt(row: dict[str, Any], show_choices: bool = True) -> str:
    """The question, and with ``show_choices`` its choices one per line (:data:`CHOICES_PROMPT`)."""
    if not (show_choices and row.get("choices")):
        return row["question"]
    return CHOICES_PROMPT.format(question=row["question"], options="\n".join(f"- {c}" for c in row["choices"]))


# -- evaluators ---------------------------------------------------------------------------
@register_evaluator("video_temporal")
def video_temporal_evaluator(modality, model, data: str, *, seed: int = 0,
                             show_choices: bool = True) -> dict[str, float]:
    """Accuracy on temporal-order and direction questions about clips (higher is better):
    ``accuracy`` (with ``accuracy_low`` / ``accuracy_high``, its 95% Wilson interval),
    ``correct``, ``count``, the same under ``KIND/`` per kind, and ``no_choice``. With
    ``show_choices`` a multiple-choice question lists its choices in the prompt."""
    rows = read_temporal_questions(data)
    answers = ask_about_clips(modality, model, rows, [[temporal_prompt(r, show_choices)] for r in rows], seed)
    return temporal_scores([a[0] for a in answers], rows)


@register_evaluator("video_chair")
def video_chair_evaluator(modality, model, data: str, *, seed: int = 0, prompt: str = VIDEO_CAPTION_PROMPT,
                          vocabulary: str | None = None) -> dict[str, float]:
    """CHAIR_s and CHAIR_i of the model's clip captions (lower is better), and ``captions``."""
    rows = read_annotated_clips(data, "video_chair")
    captions = ask_about_clips(modality, model, rows, [[r.get("prompt") or prompt] for r in rows], seed)
    result = chair([c[0] for c in captions], [r["objects"] for r in rows], load_vocabulary(vocabulary))
    return {"CHAIR_s": result["CHAIR_s"], "CHAIR_i": result["CHAIR_i"], "captions": float(len(rows))}


@register_evaluator("video_pope")
def video_pope_evaluator(modality, model, data: str, *, seed: int = 0, setting: str = "adversarial",
                         per_video: int = 3, vocabulary: str | None = None) -> dict[str, float]:
    """POPE yes/no probing of clips with negatives drawn by ``setting`` (``random``,
    ``popular`` or ``adversarial``): up to ``per_video`` annotated objects of each clip and as
    many absent ones. Accuracy, precision, recall, F1, yes-ratio, and ``questions``."""
    if setting not in POPE_SETTINGS:
        raise ConfigError(f"eval.options.video_pope.setting must be one of {', '.join(POPE_SETTINGS)}, "
                          f"got {setting!r}")
    if isinstance(per_video, bool) or not isinstance(per_video, int) or per_video < 1:
        raise ConfigError(f"eval.options.video_pope.per_video must be a positive integer, got {per_video!r}")
    rows = read_annotated_clips(data, "video_pope")
    questions = pope_questions([r["objects"] for r in rows], load_vocabulary(vocabulary), setting, per_video, seed)
    per_row: list[list[dict]] = [[] for _ in rows]
    for question in questions:
        per_row[question["index"]].append(question)
    answers = ask_about_clips(modality, model, rows,
                              [[VIDEO_POPE_PROMPT.format(object=q["object"]) for q in qs] for qs in per_row], seed)
    labels = [q["label"] for qs in per_row for q in qs]
    return {**pope_scores([a for row in answers for a in row], labels), "questions": float(len(labels))}
