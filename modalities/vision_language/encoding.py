"""Turning one preference pair into token ids: chat-template prompt with its image and clip
placeholders expanded by the processor, and chosen / rejected responses.

Truncation shortens the responses only (:mod:`mmalign.modalities.tokens.truncation`): the
prompt, and above all its image tokens, is never cut (a model fed half an image's tokens fails
or silently misreads), so a prompt that leaves no room for a response is a
:class:`~mmalign.errors.DataError`.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mmalign.data.io import RowRef
from mmalign.errors import DataError
from mmalign.modalities.tokens.responses import response_span, adds_bos
from mmalign.modalities.tokens.truncation import PromptTooLong, fit
from mmalign.modalities.vision_language.media import processor_kwargs

IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, AUDIO_PLACEHOLDER = "<image>", "<video>", "<audio>"
#: placeholder text of each media kind (the kind is also its content-item type)
PLACEHOLDERS = {"image": IMAGE_PLACEHOLDER, "video": VIDEO_PLACEHOLDER, "audio": AUDIO_PLACEHOLDER}
MARKER = re.compile("(<image>|<video>|<audio>)")
#: what the messages call one item of each kind
NOUNS = {"image": "image", "video": "clip", "audio": "sound"}


@dataclass
class EncodedPair:
    """Token ids of a pair; ``*_offsets`` are each response token's character span."""

    prompt_text: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_offsets: list[tuple[int, int]]
    rejected_offsets: list[tuple[int, int]]


def to_messages(prompt: Any, n_images: int, where: RowRef, field: str = "prompt", n_videos: int = 0,
                n_audios: int = 0) -> list[dict]:
    """A prompt (text, or chat messages) as chat messages whose content is a list of
    ``{"type": "text", "text": ...}`` / ``{"type": "image"}`` / ``{"type": "video"}`` /
    ``{"type": "audio"}`` items.

    ``<image>`` / ``<video>`` / ``<audio>`` in text and the matching items are placeholders.
    Their count must equal the number of images (clips, sounds); a prompt with no placeholder
    of a kind gets all its media of that kind in front of the first user turn (the RLAIF-V /
    RLHF-V convention of questions without placeholders; sounds, then clips, then images).
    """
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        messages = prompt
    else:
        raise where.error(field, f"is neither text nor a list of chat messages (got {type(prompt).__name__})",
                          "Give the question as text or as [{'role': 'user', 'content': ...}, ...]")
    out = [{"role": m["role"], "content": _content_items(m.get("content"), where, field)} for m in messages]
    for kind, count in (("image", n_images), ("video", n_videos), ("audio", n_audios)):
        _place(out, kind, count, where, field)
    return out


def _place(messages: list[dict], kind: str, count: int, where: RowRef, field: str) -> None:
    """Check the ``kind`` placeholders against ``count``, or put ``count`` of them first."""
    placeholders = sum(item["type"] == kind for m in messages for item in m["content"])
    noun = NOUNS[kind]
    if placeholders == 0 and count > 0:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise where.error(field, f"has no user turn to attach the {noun}s to", "Add a user message")
        first_user["content"] = [{"type": kind}] * count + first_user["content"]
    elif placeholders != count:
        more = "more" if placeholders > count else "fewer"
        raise where.error(field, f"has {placeholders} {kind} placeholders but the row has {count} {noun}s "
                                 f"({more} placeholders than {noun}s)",
                          f"Give one {PLACEHOLDERS[kind]} placeholder per {noun}, or none to put every {noun} first")


def _content_items(content: Any, where: RowRef, field: str) -> list[dict]:
    """Text with ``<image>`` markers, or content items, as a list of typed items."""
    if isinstance(content, str):
        items: list[dict] = []
        for piece in MARKER.split(content):
            kind = next((k for k, marker in PLACEHOLDERS.items() if piece == marker), None)
            if kind is not None:
                items.append({"type": kind})
            elif piece.strip():
                items.append({"type": "text", "text": piece.strip()})
        return items
    if isinstance(content, list):
        items = []
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind in PLACEHOLDERS:
                items.append({"type": kind})
            elif kind == "text":
                items.extend(_content_items(item.get("text") or "", where, field))
            else:
                raise where.error(field, f"has a content item of unknown type {kind!r}",
                                  "Use {'type': 'text', 'text': ...}, {'type': 'image'}, {'type': 'video'} or "
                                  "{'type': 'audio'} items")
        return items
    raise where.error(field, f"has message content of type {type(content).__name__}", "Give text or a list of items")


def encode_pair(processor, messages: list[dict], images: list, chosen: str, rejected: str,
                max_length: int | None, where: RowRef, repairs: Counter | None = None,
                truncation: str = "keep_start", clips: list | None = None, audios: list | None = None,
                audio_rate: int = 16000) -> EncodedPair:
    """Token ids of the prompt (image and clip placeholders expanded, BOS included) and of each
    response (closed by EOS: :mod:`mmalign.modalities.tokens.responses`), with responses
    shortened by ``truncation`` to fit ``max_length``; the prompt is never cut."""
    _check_kinds(processor, images, clips, audios, where)
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = processor(text=[text], return_tensors="pt", add_special_tokens=adds_bos(processor.tokenizer, text),
                           **processor_kwargs(images, clips or [], audios or [], audio_rate))["input_ids"][0].tolist()
    sides = [_response_ids(processor.tokenizer, response) for response in (chosen, rejected)]
    try:
        prompt_ids, keep = fit(prompt_ids, [len(ids) for ids, _ in sides], max_length, truncation)
    except PromptTooLong as exc:
        raise _prompt_too_long(processor, prompt_ids, exc.max_length, where) from None
    (chosen_ids, chosen_offsets), (rejected_ids, rejected_offsets) = [(i[k], o[k]) for (i, o), k in zip(sides, keep)]
    cut = sum(len(ids) > k.stop - k.start for (ids, _), k in zip(sides, keep))
    if repairs is not None and cut:
        repairs["responses truncated to max_length"] += cut
    return EncodedPair(text, prompt_ids, chosen_ids, rejected_ids, chosen_offsets, rejected_offsets)


def _check_kinds(processor, images: list, clips: list | None, audios: list | None, where: RowRef) -> None:
    """Refuse media of a kind the processor has no placeholder token for (it would drop them)."""
    for kind, given, field in (("image", images, "image"), ("video", clips, "video"), ("audio", audios, "audio")):
        token = getattr(processor, f"{kind}_token", None) or getattr(processor, f"{kind}_token_id", None)
        if given and token is None:
            raise where.error(field, f"has a {NOUNS[kind]}, but {type(processor).__name__} does not read {kind}",
                              "Use a model that reads this kind (images: LLaVA, Qwen2-VL; clips: Qwen2-VL, "
                              "LLaVA-NeXT-Video; sounds: Qwen2-Audio) or drop the column")


def _prompt_too_long(processor, prompt_ids: list[int], max_length: int, where: RowRef) -> DataError:
    counts = [(sum(t == getattr(processor, f"{kind}_token_id", None) for t in prompt_ids), noun)
              for kind, noun in NOUNS.items()]
    media = " and ".join(f"{n} of them {noun} tokens" for n, noun in counts if n)
    nouns = " and ".join(noun for n, noun in counts if n) or "image"
    return where.error(
        "images" if media else "prompt",
        f"the prompt is {len(prompt_ids)} tokens ({media or 'none of them image tokens'}), which "
        f"leaves no room for a response within max_length={max_length}; truncating would cut "
        f"into the prompt's {nouns} tokens",
        "Raise the modality option max_length, or use fewer / smaller images or fewer frames for this row")


def _response_ids(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Response tokens and their character spans; the closing EOS has an empty span at the end."""
    out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    span, close = response_span(out["input_ids"], tokenizer.bos_token_id, tokenizer.eos_token_id)
    ids, offsets = list(out["input_ids"])[span], [tuple(o) for o in out["offset_mapping"]][span]
    if close:
        ids, offsets = ids + [tokenizer.eos_token_id], offsets + [(len(text), len(text))]
    return ids, offsets
