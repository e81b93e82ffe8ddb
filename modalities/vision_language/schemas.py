"""Vision-language preference data schemas, registered in ``mmalign.registry.datasets``.

Registered as ``vision_language:<name>`` (a recipe may write the bare name). A schema is a
function ``schema(row: dict, where: RowRef) -> list[dict]`` turning one data row into zero or
more *pairs*. A pair is a plain dict::

    prompt:   text (``<image>`` marks where images go) or chat messages
    images:   list of images (paths, bytes, datasets Image dicts or PIL images)
    chosen, rejected: response text
    fields:   the row's extra numeric columns, {name: float} (``margin``, scores), maybe empty
    optional: rejected_image, retrieved_image (mDPO / Re-Align),
              chosen_spans / rejected_spans: [(start, end, label)] sentence labels (Mask-DPO)

Every schema also reads the optional columns ``rejected_image``, ``retrieved_image`` and
``chosen_sentences`` / ``rejected_sentences`` (lists of ``{"text", "label"}``, label 1 =
correct, 0 = hallucinated; the response is their texts joined by spaces).
"""
from __future__ import annotations

import json
import math
from typing import Any

from mmalign.data.schemas import numeric_fields
from mmalign.data.io import RowRef, require_fields
from mmalign.registry import register_dataset

#: VLFeedback's rating aspects, averaged into one score per completion
VLFEEDBACK_ASPECTS = ("Helpfulness", "Visual Faithfulness", "Ethical Considerations")


@register_dataset("vision_language:rlaif_v")
def rlaif_v(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """RLAIF-V (Yu et al. 2024, arXiv:2405.17220): ``image``, ``question``, ``chosen``, ``rejected``."""
    require_fields(row, ("image", "question"), where)
    return [_with_extras(row, where, prompt=row["question"], images=[row["image"]])]


@register_dataset("vision_language:vl_conversational")
def vl_conversational(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """Conversational rows: ``prompt`` (text or chat messages), ``images`` (list, may be
    empty), ``chosen`` / ``rejected`` (text, or a list holding one assistant message)."""
    require_fields(row, ("prompt",), where)
    images = row.get("images")
    if images is None and row.get("image") is not None:
        images = [row["image"]]
    if images is not None and not isinstance(images, list):
        raise where.error("images", f"must be a list of images (got {type(images).__name__})",
                          "Write images as a list, e.g. [\"a.png\", \"b.png\"]")
    pair = _with_extras(row, where, prompt=row["prompt"], images=list(images or []))
    return [pair]


@register_dataset("vision_language:rlhf_v")
def rlhf_v(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """RLHF-V (Yu et al. 2023, arXiv:2312.00849): ``image`` and a JSON ``text`` field holding
    ``question``, ``chosen`` (the human-corrected answer) and ``rejected``."""
    require_fields(row, ("image", "text"), where)
    text = row["text"]
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except json.JSONDecodeError as exc:
            raise where.error("text", f"is not valid JSON ({exc.msg} at column {exc.colno})",
                              "Give a JSON object with question, chosen and rejected") from exc
        except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits, deep nesting
            raise where.error("text", f"cannot be read as JSON ({type(exc).__name__}: {exc})",
                              "Give a JSON object with question, chosen and rejected") from exc
    if not isinstance(text, dict):
        raise where.error("text", "must be a JSON object with question, chosen and rejected", None)
    for key in ("question", "chosen", "rejected"):
        if not isinstance(text.get(key), str):
            raise where.error("text", f"has no '{key}' text", "Give question, chosen and rejected in the JSON")
    merged = {**row, "chosen": text["chosen"], "rejected": text["rejected"]}
    return [_with_extras(merged, where, prompt=text["question"], images=[row["image"]])]


@register_dataset("vision_language:vlfeedback")
def vlfeedback(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """VLFeedback / Silkie (Li et al. 2023, arXiv:2312.10665): one prompt, several rated
    ``completions`` (``response`` and ``annotations`` {aspect: {"Rating": r}}).

    Each completion scores the mean of its aspect ratings; every two completions with
    different scores make a pair (the higher one chosen, ``margin`` = score difference).
    Ties make no pair: a tie says nothing about which response is better.
    """
    require_fields(row, ("prompt", "completions"), where)
    image = row.get("image", row.get("img_path"))
    if image is None:
        raise where.error("image", "is missing", "Give each row an 'image' (or 'img_path') column")
    if not isinstance(row["completions"], list):
        got = type(row["completions"]).__name__
        raise where.error("completions", f"must be a list of rated completions (got {got})",
                          "Give a list of {\"response\": ..., \"annotations\": ...} objects")
    scored = [(_mean_rating(c, where, k), c["response"]) for k, c in enumerate(row["completions"])]
    pairs = []
    for i in range(len(scored)):
        for j in range(i + 1, len(scored)):
            (si, ri), (sj, rj) = scored[i], scored[j]
            if si == sj:
                continue
            chosen, rejected = (ri, rj) if si > sj else (rj, ri)
            pairs.append({"prompt": row["prompt"], "images": [image], "chosen": chosen, "rejected": rejected,
                          "fields": {**numeric_fields(row), "margin": abs(si - sj)}})
    return pairs


def _mean_rating(completion: Any, where: RowRef, index: int) -> float:
    field = f"completions[{index}]"
    if not isinstance(completion, dict) or not isinstance(completion.get("response"), str):
        raise where.error(field, "has no 'response' text", "Give each completion a response and annotations")
    annotations = completion.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise where.error(field, f"has annotations that are not an object "
                          f"(got {type(annotations).__name__})", "Write annotations as {aspect: {\"Rating\": r}}")
    ratings = []
    for aspect in VLFEEDBACK_ASPECTS:
        rated = annotations.get(aspect) or {}
        if not isinstance(rated, dict):
            raise where.error(field, f"has a {aspect} annotation that is not an object "
                              f"(got {type(rated).__name__})", "Write annotations as {aspect: {\"Rating\": r}}")
        value = rated.get("Rating")
        if value is None or str(value).strip() in ("", "N/A"):
            continue
        try:
            rating = float(value)
        except (TypeError, ValueError) as exc:
            raise where.error(field, f"has a non-numeric {aspect} rating {value!r}", "Ratings are numbers 1-5") from exc
        if not math.isfinite(rating):
            # a nan score would make a pair with a nan margin, and compare false with every other
            raise where.error(field, f"has a non-finite {aspect} rating {value!r}", "Ratings are numbers 1-5")
        ratings.append(rating)
    if not ratings:
        raise where.error(field, "has no rating", f"Rate at least one of: {', '.join(VLFEEDBACK_ASPECTS)}")
    return sum(ratings) / len(ratings)


def _with_extras(row: dict[str, Any], where: RowRef, *, prompt: Any, images: list) -> dict[str, Any]:
    """The pair of a row, with the optional columns every schema reads."""
    pair: dict[str, Any] = {"prompt": prompt, "images": images}
    for side in ("chosen", "rejected"):
        sentences = row.get(f"{side}_sentences")
        if sentences:
            pair[side], pair[f"{side}_spans"] = _join_sentences(sentences, where, f"{side}_sentences")
        else:
            pair[side] = _response_text(row.get(side), where, side)
    for key in ("rejected_image", "retrieved_image"):
        if row.get(key) is not None:
            pair[key] = row[key]
    pair["fields"] = numeric_fields(row)
    return pair


def _response_text(value: Any, where: RowRef, field: str) -> str:
    """A response as text: a string, or TRL's ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content")
        if isinstance(value, list):
            parts = [item.get("text") for item in value if isinstance(item, dict)]
            if any(part is not None and not isinstance(part, str) for part in parts):
                raise where.error(field, "has a content part whose 'text' is not text",
                                  "Write content parts as {\"type\": \"text\", \"text\": \"...\"}")
            value = " ".join(part or "" for part in parts)
    if value is None:
        raise where.error(field, "is missing", f"Give every row a '{field}' response")
    if not isinstance(value, str):
        raise where.error(field, f"must be text (got {type(value).__name__})", None)
    return value


def _join_sentences(sentences: Any, where: RowRef, field: str) -> tuple[str, list[tuple[int, int, int]]]:
    """Labelled sentences -> the response text and each sentence's ``(start, end, label)``."""
    if not isinstance(sentences, list):
        raise where.error(field, f"must be a list of sentences (got {type(sentences).__name__})",
                          "Write [{\"text\": ..., \"label\": 0 or 1}, ...]")
    text, spans = "", []
    for k, item in enumerate(sentences):
        valid = isinstance(item, dict) and isinstance(item.get("text"), str) and item.get("label") in (0, 1)
        if not valid:
            raise where.error(f"{field}[{k}]", "must be {'text': str, 'label': 0 or 1}",
                              "Label each sentence 1 (correct) or 0 (hallucinated)")
        if text:
            text += " "
        spans.append((len(text), len(text) + len(item["text"]), int(item["label"])))
        text += item["text"]
    return text, spans
