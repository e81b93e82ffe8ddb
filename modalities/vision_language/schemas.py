"""Vision-language preference data schemas, registered in ``mmalign.registry.datasets``.

Registered as ``vision_language:<name>`` (a recipe may write the bare name). A schema is a
function ``schema(row: dict, where: RowRef) -> list[dict]`` turning one data row into zero or
more *pairs*. A pair is a plain dict::

    prompt:   text (``<image>`` / ``<video>`` mark where images / videos go) or chat messages
              (content items may be ``{"type": "image"}`` / ``{"type": "video"}``)
    images:   list of images (paths, bytes, datasets Image dicts or PIL images)
    videos:   list of videos: a path (relative to the data file) or the file's bytes
    chosen, rejected: response text
    fields:   the row's extra numeric columns, {name: float} (``margin``, scores), maybe empty
    optional: rejected_image, retrieved_image (mDPO / Re-Align), rejected_video (one clip
              standing in for the row's one video on the rejected side: mDPO's "chosen answer
              under another clip"), chosen_spans / rejected_spans: [(start, end, label)]
              sentence labels (Mask-DPO)

Unpaired rows (:func:`video_unpaired`, KTO-style) give ``completion`` and ``label`` (true:
desirable) in place of ``chosen`` / ``rejected``.

Every paired schema also reads the optional columns ``videos`` (a list) or ``video`` (one),
``rejected_image``, ``retrieved_image``, ``rejected_video`` and ``chosen_sentences`` /
``rejected_sentences`` (lists of ``{"text", "label"}``, label 1 = correct, 0 = hallucinated;
the response is their texts joined by spaces).

Schemas of other tools' formats:

* ``llamafactory``: LLaMA-Factory's pairwise ("ranking": true) rows in sharegpt form,
  ``conversations`` of ``{"from": "human" | "gpt" | "system" | "observation" |
  "function_call", "value": text}`` ending with the human question, ``chosen`` / ``rejected``
  ``{"from": "gpt", "value": text}`` (or text), optional ``system``, ``images``, ``videos``;
  or its OpenAI-style variant, ``messages`` of ``{"role", "content"}``.
* ``swift``: ms-swift's RLHF rows, ``messages`` of ``{"role", "content"}`` whose last
  (assistant) message is the chosen answer, ``rejected_response`` (text), optional
  ``images``, ``videos``, ``rejected_images`` / ``rejected_videos`` (the rejected side's
  media).

Chat turns become messages of roles ``system`` (first only), ``user`` and ``assistant``,
alternating from the user's and ending with the user's question; tool turns take the place
those formats give them (``observation`` / ``tool`` a user turn, ``function_call`` /
``tool_call`` an assistant turn).
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
            pairs.append({"prompt": row["prompt"], "images": [image], "videos": [], "chosen": chosen,
                          "rejected": rejected, "fields": {**numeric_fields(row), "margin": abs(si - sj)}})
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


@register_dataset("vision_language:video_qa")
def video_qa(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """Video question answering: ``video`` (one clip; or ``videos``, a list), ``question``,
    ``chosen``, ``rejected``. ``<video>`` in the question marks where the clip goes."""
    require_fields(row, ("question",), where)
    videos = _required_videos(row, where)
    return [_with_extras(row, where, prompt=_text(row["question"], where, "question"), images=[], videos=videos)]


@register_dataset("audio_language:audio_qa")
def audio_qa(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """Audio question answering (Qwen2-Audio): ``audio`` (one sound; or ``audios``, a list),
    ``question`` (``<audio>`` marks the sound's place), ``chosen``, ``rejected``."""
    require_fields(row, ("question",), where)
    _required(row, where, "audio")
    return [_with_extras(row, where, prompt=_text(row["question"], where, "question"), images=[], videos=[])]


@register_dataset("vision_language:video_unpaired")
def video_unpaired(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """Unpaired video rows for KTO-style objectives: ``video`` (or ``videos``, a list),
    ``question``, ``response`` and ``label`` (true or 1: desirable; false or 0: undesirable).

    The pair holds ``completion`` and ``label`` in place of ``chosen`` / ``rejected``."""
    require_fields(row, ("question", "response", "label"), where)
    videos = _required_videos(row, where)
    completion = _response_text(row["response"], where, "response")
    if not completion.strip():
        raise where.error("response", "is empty", "Give a non-empty response or drop the row")
    return [{"prompt": _text(row["question"], where, "question"), "images": [], "videos": videos,
             "completion": completion, "label": _label(row["label"], where),
             "fields": numeric_fields(row, {"label"})}]


@register_dataset("vision_language:llamafactory")
def llamafactory(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """LLaMA-Factory's pairwise rows (``"ranking": true`` in its ``dataset_info.json``).

    Sharegpt form: ``conversations``, a list of ``{"from": "human" | "gpt" | "system" |
    "observation" | "function_call", "value": text}`` (``<image>`` / ``<video>`` mark media)
    ending with the human question; ``chosen`` and ``rejected``, each ``{"from": "gpt",
    "value": text}`` or text; optional ``system`` (text, used when no first turn is a system
    turn), ``images`` and ``videos`` (lists of paths). The OpenAI-style variant writes the
    turns as ``messages`` of ``{"role": "user" | "assistant" | "system", "content": text}``
    and the answers as ``{"role": "assistant", "content": text}``.
    """
    field = "conversations" if row.get("conversations") is not None else "messages"
    require_fields(row, (field, "chosen", "rejected"), where)
    messages = _check_turns(_chat(row[field], where, field), where, field)
    system = row.get("system")
    if system is not None and messages[0]["role"] != "system":
        if not isinstance(system, str):
            raise where.error("system", f"must be text (got {type(system).__name__})",
                              "Write the system prompt as text")
        if system.strip():
            messages = [{"role": "system", "content": system}] + messages
    merged = {**row, "chosen": _answer(row["chosen"], where, "chosen"),
              "rejected": _answer(row["rejected"], where, "rejected")}
    return [_with_extras(merged, where, prompt=messages, images=_path_list(row, where, "images"))]


@register_dataset("vision_language:swift")
def swift(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """ms-swift's RLHF rows (DPO and its kin): ``messages``, a list of ``{"role": "system" |
    "user" | "assistant", "content": text}`` whose last, assistant message is the chosen
    answer; ``rejected_response`` (text); optional ``images``, ``videos``, ``audios`` (lists of
    paths, placed by ``<image>`` / ``<video>`` / ``<audio>`` in the text), and
    ``rejected_images`` / ``rejected_videos`` / ``rejected_audios``: the rejected side's media,
    usable when the row has one image (video, sound) and gives one rejected one, which becomes
    the pair's ``rejected_image`` (``rejected_video``, ``rejected_audio``).
    """
    require_fields(row, ("messages", "rejected_response"), where)
    messages = _chat(row["messages"], where, "messages")
    last = messages[-1]["role"]
    if last != "assistant":
        raise where.error(f"messages[{len(messages) - 1}]", f"is {_a(last)} turn, but the last message is the "
                          "chosen answer and must be the assistant's",
                          "End messages with the chosen assistant answer; give the other in rejected_response")
    prompt = _check_turns(messages[:-1], where, "messages")
    merged = {**row, "chosen": messages[-1]["content"],
              "rejected": _text(row["rejected_response"], where, "rejected_response")}
    images, videos = _path_list(row, where, "images"), _row_videos(row, where)
    for kind, media in (("image", images), ("video", videos), ("audio", _row_media(row, where, "audio"))):
        rejected = _rejected_media(row, where, kind, media)
        if rejected is not None:
            merged[f"rejected_{kind}"] = rejected
    return [_with_extras(merged, where, prompt=prompt, images=images, videos=videos)]


def _with_extras(row: dict[str, Any], where: RowRef, *, prompt: Any, images: list,
                 videos: list | None = None) -> dict[str, Any]:
    """The pair of a row, with the optional columns every schema reads; ``videos`` None:
    the row's ``videos`` / ``video`` column."""
    videos = _row_videos(row, where) if videos is None else videos
    pair: dict[str, Any] = {"prompt": prompt, "images": images, "videos": videos,
                            "audios": _row_media(row, where, "audio")}
    for side in ("chosen", "rejected"):
        sentences = row.get(f"{side}_sentences")
        if sentences:
            pair[side], pair[f"{side}_spans"] = _join_sentences(sentences, where, f"{side}_sentences")
        else:
            pair[side] = _response_text(row.get(side), where, side)
    for key in ("rejected_image", "retrieved_image"):
        if row.get(key) is not None:
            pair[key] = row[key]
    if row.get("rejected_audio") is not None:
        if len(pair["audios"]) != 1:
            raise where.error("rejected_audio", f"needs a row with exactly one sound (this row has "
                              f"{len(pair['audios'])})", "Use single-sound rows for a rejected_audio, or drop the column")
        pair["rejected_audio"] = _media_file(row["rejected_audio"], where, "rejected_audio", "audio")
    if row.get("rejected_video") is not None:
        if len(videos) != 1:
            raise where.error("rejected_video", f"needs a row with exactly one video (this row has {len(videos)})",
                              "Use single-video rows for a rejected_video, or drop the column")
        pair["rejected_video"] = _video_source(row["rejected_video"], where, "rejected_video")
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


#: the chat roles of LLaMA-Factory's sharegpt / OpenAI forms and of ms-swift, as the pair's
#: user / assistant / system; tool turns sit where those formats put them
ROLES = {"human": "user", "user": "user", "observation": "user", "tool": "user",
         "gpt": "assistant", "assistant": "assistant", "function_call": "assistant", "tool_call": "assistant",
         "system": "system"}
TURN_ORDER_HINT = ("Turns alternate user, assistant, user, ... after an optional first system turn, and end "
                   "with the user's question")


def _chat(turns: Any, where: RowRef, field: str) -> list[dict[str, str]]:
    """Chat turns (``{"from", "value"}`` or ``{"role", "content"}``) as ``{"role", "content"}``
    messages, one per turn (so ``field[k]`` names turn ``k`` in both)."""
    if not isinstance(turns, list):
        raise where.error(field, f"must be a list of chat turns (got {type(turns).__name__})",
                          "Write [{\"from\": \"human\", \"value\": ...}, ...] or "
                          "[{\"role\": \"user\", \"content\": ...}, ...]")
    messages = []
    for k, turn in enumerate(turns):
        name = f"{field}[{k}]"
        if not isinstance(turn, dict):
            raise where.error(name, f"must be a chat turn (got {type(turn).__name__})",
                              "Write {\"from\": ..., \"value\": ...} or {\"role\": ..., \"content\": ...}")
        role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
        role, text = turn.get(role_key), turn.get(text_key)
        if not isinstance(role, str) or role not in ROLES:
            raise where.error(name, f"has the {role_key} {_short(role)}", f"Use one of: {', '.join(ROLES)}")
        if not isinstance(text, str):
            raise where.error(name, f"has a {text_key} that is not text (got {type(text).__name__})",
                              "Write each turn's text as a string, with <image> / <video> where media go")
        messages.append({"role": ROLES[role], "content": text})
    return messages


def _check_turns(messages: list[dict[str, str]], where: RowRef, field: str) -> list[dict[str, str]]:
    """``messages``, checked to be a prompt: an optional first system turn, then user and
    assistant turns alternating from the user's, ending with the user's question."""
    start = 1 if messages and messages[0]["role"] == "system" else 0
    for k in range(start, len(messages)):
        expected = "user" if (k - start) % 2 == 0 else "assistant"
        if messages[k]["role"] != expected:
            raise where.error(f"{field}[{k}]", f"is {_a(messages[k]['role'])} turn where {_a(expected)} turn "
                              "belongs", TURN_ORDER_HINT)
    if len(messages) == start:
        raise where.error(field, "has no user turn (the question the answers reply to)", TURN_ORDER_HINT)
    if messages[-1]["role"] != "user":
        raise where.error(field, "does not end with a user turn (the question the answers reply to)",
                          TURN_ORDER_HINT)
    return messages


def _answer(value: Any, where: RowRef, field: str) -> str:
    """A response: text, an assistant turn (``{"from": "gpt", "value"}`` or ``{"role":
    "assistant", "content"}``), or a list holding one."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        role_key, text_key = ("from", "value") if "from" in value else ("role", "content")
        role = value.get(role_key)
        if role is not None and (not isinstance(role, str) or ROLES.get(role) != "assistant"):
            raise where.error(field, f"is a turn of {role_key} {_short(role)}, not the assistant's answer",
                              f"Write {{\"{role_key}\": \"{'gpt' if role_key == 'from' else 'assistant'}\", "
                              f"\"{text_key}\": ...}} or plain text")
        if text_key == "content":
            return _response_text([value], where, field)
        value = value.get(text_key)
        if value is None:
            raise where.error(field, f"has no '{text_key}'", f"Give the answer's text as its '{text_key}'")
    return _text(value, where, field)


def _text(value: Any, where: RowRef, field: str) -> str:
    if not isinstance(value, str):
        raise where.error(field, f"must be text (got {type(value).__name__})", None)
    return value


def _label(value: Any, where: RowRef) -> bool:
    """An unpaired row's label: true / 1 desirable, false / 0 undesirable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise where.error("label", f"must be true or false (got {_short(value)})",
                      "Use true (or 1) for a desirable response and false (or 0) for an undesirable one")


def _path_list(row: dict[str, Any], where: RowRef, field: str) -> list:
    """A media column of LLaMA-Factory / ms-swift: a list, or one path as text; absent: []."""
    value = row.get(field)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise where.error(field, f"must be a list of paths (got {type(value).__name__})",
                          f"Write {field} as a list, e.g. [\"a.png\"]")
    return list(value)


def _row_media(row: dict[str, Any], where: RowRef, kind: str) -> list:
    """The row's videos (``kind`` "video") or sounds ("audio"): its ``videos`` / ``audios``
    list (or one path as text) when not empty, else its one ``video`` / ``audio``, else []."""
    items = _path_list(row, where, f"{kind}s")
    if items:
        return [_media_file(v, where, f"{kind}s[{k}]", kind) for k, v in enumerate(items)]
    if row.get(kind) is not None:
        return [_media_file(row[kind], where, kind, kind)]
    return []


def _row_videos(row: dict[str, Any], where: RowRef) -> list:
    return _row_media(row, where, "video")


def _required(row: dict[str, Any], where: RowRef, kind: str) -> list:
    items = _row_media(row, where, kind)
    if not items:
        raise where.error(kind, "is missing", f"Give each row a '{kind}' (a path relative to the data file) "
                          f"or a non-empty '{kind}s' list")
    return items


def _required_videos(row: dict[str, Any], where: RowRef) -> list:
    return _required(row, where, "video")


def _media_file(value: Any, where: RowRef, field: str, kind: str = "video") -> str | bytes:
    """A video or sound as a pair holds it: a path (relative to the data file) or the file's
    bytes; a ``datasets`` ``{"bytes", "path"}`` dict gives its bytes, else its path."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value)
    got = "empty" if isinstance(value, (str, bytes, bytearray)) else type(value).__name__
    example, unread = ("clips/a.mp4", " (a list of frames is not read)") if kind == "video" else ("sounds/a.wav", "")
    raise where.error(field, f"must be a {kind} file's path or bytes (got {got})",
                      f"Give a path relative to the data file, e.g. \"{example}\"{unread}")


def _video_source(value: Any, where: RowRef, field: str) -> str | bytes:
    return _media_file(value, where, field, "video")


def _rejected_media(row: dict[str, Any], where: RowRef, kind: str, media: list) -> Any:
    """ms-swift's ``rejected_images`` / ``rejected_videos`` / ``rejected_audios``: the one item
    that stands in for the row's one image / video / sound on the rejected side; None when the
    column is absent or empty."""
    field = f"rejected_{kind}s"
    given = _path_list(row, where, field)
    if not given:
        return None
    if len(given) != 1 or len(media) != 1:
        raise where.error(field, f"gives {len(given)} rejected {kind}(s) for a row of {len(media)} {kind}(s); only "
                          f"one rejected {kind} standing in for the row's one {kind} can be used",
                          f"Use rows with one {kind} and one rejected {kind}, or drop {field}")
    return given[0] if kind == "image" else _media_file(given[0], where, f"{field}[0]", kind)


def _a(role: str) -> str:
    return f"{'an' if role == 'assistant' else 'a'} {role}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message names a value, it does not hold it)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
