"""Sound-hallucination evaluators of the audio-language modality, registered by name.

Each evaluator is ``fn(modality, model, data, *, seed=0, **params) -> dict[str, float]``, like
the image and clip evaluators of the vision-language modality: it reads ``data`` (a local file
of rows ``{"audio": path or bytes, "events": [event names], "prompt"?: text}``, the path
relative to the data file), has the model answer greedily with ``modality.sample`` and scores
the answers with plain functions, over the sound-event vocabulary of :mod:`.events`. No API,
no judge model.

* ``audio_pope``: POPE (Li et al. 2023, arXiv:2305.10355) on sounds: "Is there a dog barking
  in the audio? Answer yes or no." about up to ``per_sound`` annotated events of each sound
  (answer yes) and as many absent ones (answer no), drawn at random, from the most frequent
  events (``popular``) or from those that most co-occur with the sound's events
  (``adversarial``) by :func:`~mmalign.modalities.vision_language.hallucination.pope_questions`,
  scored by :func:`~mmalign.modalities.vision_language.hallucination.pope_scores`.
* ``audio_chair``: CHAIR (Rohrbach et al. 2018, arXiv:1809.02156) on captions ("Describe the
  sounds in this audio in detail."): the events each caption mentions, matched through the
  synonym table (:func:`event_chair`), give ``CHAIR_i`` (mentioned events that are not
  annotated / mentioned events) and ``CHAIR_s`` (captions with any such event / captions), and
  the recall of the same captions (:func:`event_recall`).
* ``audio_event_recall``: recall alone: annotated events the captions mention / annotated
  events, with a 95% Wilson interval, and AMBER's coverage (the mean per sound).

An event counts once per caption however often and in however many words the caption names
it: "a dog is barking; the dog barks" mentions one event, the dog. (CHAIR on images counts
every mention; a sound's caption names an event by its source and by its sound, "dog" and
"barking", so counting words would weigh events by the caption's style.)

Rows are checked before the model answers anything (a missing field, a sound file that does not
exist, an event the vocabulary does not know, a prompt with the wrong placeholders); each sound
is then read once (the modality's rate, mono, cut to ``audio_seconds``) and every question
about it asked. A problem raises :class:`~mmalign.errors.DataError` naming file, row and field.
"""
from __future__ import annotations

from typing import Any, Sequence

from mmalign.data.io import RowRef, read_rows, require_fields
from mmalign.errors import ConfigError, DataError
from mmalign.intervals import wilson_interval
from mmalign.modalities.audio_io import audio_source
from mmalign.modalities.audio_language.events import EventVocabulary, event_vocabulary, mentioned_events
from mmalign.modalities.vision_language.encoding import to_messages
from mmalign.modalities.vision_language.hallucination import (POPE_SETTINGS, chair, coverage, pope_questions,
                                                              pope_scores)
from mmalign.modalities.vision_language.media import open_audio
from mmalign.modalities.vision_language.objects import ObjectVocabulary
from mmalign.registry import register_evaluator

CAPTION_PROMPT = "Describe the sounds in this audio in detail."
#: "Is there a dog barking in the audio? Answer yes or no." (``sound``: the event's phrase)
POPE_PROMPT = "Is there {sound} in the audio? Answer yes or no."


# -- scoring ------------------------------------------------------------------------------
def event_chair(captions: Sequence[str], annotations: Sequence[Sequence[str]],
                vocabulary: ObjectVocabulary) -> dict[str, Any]:
    """``CHAIR_i`` (hallucinated events / mentioned events, each event once per caption),
    ``CHAIR_s`` (captions with a hallucinated event / captions), the counts ``mentioned`` and
    ``hallucinated``, and per caption the events ``mentioned`` and ``hallucinated``, in order
    of first mention. The matching is :func:`~mmalign.modalities.vision_language.hallucination.chair`'s."""
    result = chair(captions, annotations, vocabulary)
    per_caption = [{"mentioned": list(dict.fromkeys(c["mentioned"])),
                    "hallucinated": list(dict.fromkeys(c["hallucinated"]))} for c in result["captions"]]
    mentioned = sum(len(c["mentioned"]) for c in per_caption)
    hallucinated = sum(len(c["hallucinated"]) for c in per_caption)
    return {"CHAIR_s": result["CHAIR_s"], "CHAIR_i": hallucinated / max(mentioned, 1),
            "mentioned": mentioned, "hallucinated": hallucinated, "captions": per_caption}


def event_recall(captions: Sequence[str], annotations: Sequence[Sequence[str]],
                 vocabulary: ObjectVocabulary) -> dict[str, float]:
    """``recall``: annotated events the captions mention / annotated events (each sound's
    annotations as a set of events), over all sounds, with its 95% Wilson interval
    (``recall_low``, ``recall_high``) and the counts ``recalled`` and ``events``."""
    recalled = events = 0
    for caption, annotation in zip(captions, annotations, strict=True):
        truth = {vocabulary.canonical(name) for name in annotation}
        recalled += len(truth & set(mentioned_events(caption, vocabulary)))
        events += len(truth)
    low, high = wilson_interval(recalled, events)
    return {"recall": recalled / events if events else 0.0, "recall_low": low, "recall_high": high,
            "recalled": float(recalled), "events": float(events)}


# -- reading ------------------------------------------------------------------------------
def read_annotated_sounds(path: str | None, vocabulary: EventVocabulary,
                          evaluator: str = "audio_chair") -> list[dict[str, Any]]:
    """Rows ``{"audio", "events", "prompt"?}``, each with its ``source`` file and ``row``
    number, checked: the sound exists (a path, relative to the data file, or bytes), ``events``
    is a list of names ``vocabulary`` knows, ``prompt`` has at most one ``<audio>``."""
    if not path:
        raise ConfigError(f"{evaluator} needs a data file of annotated sounds: set eval.data (or data.eval)")
    rows = []
    for index, row in read_rows(path):
        where = RowRef(str(path), index)
        require_fields(row, ("audio",), where)
        audio_source(row["audio"], where, "audio")  # a path must exist; decoding is checked when it is read
        _check_events(row.get("events"), vocabulary, where)
        if row.get("prompt") is not None:
            to_messages(row["prompt"], 0, where, "prompt", n_audios=1)
        rows.append({**row, "source": where.file, "row": where.row})
    return rows


def _check_events(events: Any, vocabulary: EventVocabulary, where: RowRef) -> None:
    if not isinstance(events, list) or not all(isinstance(e, str) and e.strip() for e in events):
        got = "missing" if events is None else f"{events!r}"[:60]
        raise where.error("events", f"must be a list of sound-event names (got {got})",
                          "Give e.g. [\"dog\", \"speech\"], or [] for a sound with no annotated event")
    unknown = [e for e in events if not vocabulary.known(e)]
    if unknown:
        known = ", ".join(vocabulary.classes[:12])
        raise where.error("events", f"'{unknown[0]}' is not an event of the vocabulary (known: {known}, ...)",
                          "Use an event name or one of its synonyms, or pass vocabulary=<a JSON file of "
                          "events> (docs/audio_language.md)")


# -- asking -------------------------------------------------------------------------------
def ask_about_sounds(modality, model, rows: Sequence[dict[str, Any]], prompts: Sequence[Sequence[str]],
                     seed: int = 0) -> list[list[str]]:
    """For each row, the greedy answers to its ``prompts`` about its sound, the sound read once
    (at the modality's rate, mono, cut to ``audio_seconds``; not at all for a row without
    prompts). Prompt ``k`` of the whole run gets seed ``seed + k``."""
    answers, offset = [], seed
    for row, texts in zip(rows, prompts, strict=True):
        if not texts:
            answers.append([])
            continue
        sound = open_audio(row["audio"], RowRef(row["source"], row["row"]), "audio", modality.sampling)
        items = [{"prompt": text, "audios": [sound], "source": row["source"]} for text in texts]
        sampled = modality.sample(model, items, 1, seeds=list(range(offset, offset + len(items))))
        answers.append([a[0] for a in sampled])
        offset += len(items)
    return answers


def _captions(modality, model, rows: Sequence[dict[str, Any]], prompt: str, seed: int) -> list[str]:
    return [a[0] for a in ask_about_sounds(modality, model, rows, [[r.get("prompt") or prompt] for r in rows], seed)]


# -- evaluators ---------------------------------------------------------------------------
@register_evaluator("audio_chair")
def audio_chair_evaluator(modality, model, data: str, *, seed: int = 0, prompt: str = CAPTION_PROMPT,
                          vocabulary: str | None = None) -> dict[str, float]:
    """Event hallucination of the model's sound captions (:func:`event_chair`; lower is
    better): ``CHAIR_s``, ``CHAIR_i``, ``mentioned``, ``hallucinated``, ``captions``, and the
    recall of the same captions (:func:`event_recall`; higher is better)."""
    events = event_vocabulary(vocabulary)
    rows = read_annotated_sounds(data, events, "audio_chair")
    captions = _captions(modality, model, rows, prompt, seed)
    annotations = [r["events"] for r in rows]
    result = event_chair(captions, annotations, events)
    return {"CHAIR_s": result["CHAIR_s"], "CHAIR_i": result["CHAIR_i"], "mentioned": float(result["mentioned"]),
            "hallucinated": float(result["hallucinated"]), "captions": float(len(rows)),
            **event_recall(captions, annotations, events)}


@register_evaluator("audio_event_recall")
def audio_event_recall_evaluator(modality, model, data: str, *, seed: int = 0, prompt: str = CAPTION_PROMPT,
                                 vocabulary: str | None = None) -> dict[str, float]:
    """Annotated events the model's captions mention (higher is better): ``recall`` with its
    95% Wilson interval, ``recalled``, ``events``, and ``coverage`` (AMBER's: the mean over
    sounds with annotated events of the fraction mentioned)."""
    events = event_vocabulary(vocabulary)
    rows = read_annotated_sounds(data, events, "audio_event_recall")
    captions = _captions(modality, model, rows, prompt, seed)
    annotations = [r["events"] for r in rows]
    return {**event_recall(captions, annotations, events), "coverage": coverage(captions, annotations, events)}


@register_evaluator("audio_pope")
def audio_pope_evaluator(modality, model, data: str, *, seed: int = 0, setting: str = "adversarial",
                         per_sound: int = 3, vocabulary: str | None = None) -> dict[str, float]:
    """POPE yes/no probing of sounds with absent events drawn by ``setting`` (``random``,
    ``popular`` or ``adversarial``): up to ``per_sound`` annotated events of each sound and as
    many absent ones. Accuracy, precision, recall, F1 (yes is positive), yes-ratio, and ``questions``."""
    if setting not in POPE_SETTINGS:
        raise ConfigError(f"eval.options.audio_pope.setting must be one of {', '.join(POPE_SETTINGS)}, "
                          f"got {setting!r}")
    if isinstance(per_sound, bool) or not isinstance(per_sound, int) or per_sound < 1:
        raise ConfigError(f"eval.options.audio_pope.per_sound must be a positive integer, got {per_sound!r}")
    events = event_vocabulary(vocabulary)
    rows = read_annotated_sounds(data, events, "audio_pope")
    if not any(r["events"] for r in rows):
        raise DataError("no row annotates an event, so POPE has nothing to ask", file=str(data), field="events",
                        hint="Annotate the events each sound holds, e.g. \"events\": [\"dog\"]")
    questions = pope_questions([r["events"] for r in rows], events, setting, per_sound, seed)
    per_row: list[list[dict]] = [[] for _ in rows]
    for question in questions:
        per_row[question["index"]].append(question)
    answers = ask_about_sounds(modality, model, rows,
                               [[POPE_PROMPT.format(sound=events.sound(q["object"])) for q in qs] for qs in per_row],
                               seed)
    labels = [q["label"] for qs in per_row for q in qs]
    return {**pope_scores([a for row in answers for a in row], labels), "questions": float(len(labels))}
