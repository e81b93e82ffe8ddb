"""Turning one preference pair into token ids: chat-template prompt with its image
placeholders expanded by the processor, and chosen / rejected responses.

Truncation shortens the responses only (:mod:`mmalign.modalities.tokens.truncation`): the
prompt, and above all its image tokens, is never cut (a model fed half an image's tokens fails
or silently misreads), so a prompt that leaves no room for a response is a
:class:`~mmalign.errors.DataError`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from mmalign.data.io import RowRef
from mmalign.errors import DataError
from mmalign.modalities.tokens.responses import response_span, adds_bos
from mmalign.modalities.tokens.truncation import PromptTooLong, fit

IMAGE_PLACEHOLDER = "<image>"


@dataclass
class EncodedPair:
    """Token ids of a pair; ``*_offsets`` are each response token's character span."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_offsets: list[tuple[int, int]]
    rejected_offsets: list[tuple[int, int]]


def to_messages(prompt: Any, n_images: int, where: RowRef, field: str = "prompt") -> list[dict]:
    """A prompt (text, or chat messages) as chat messages whose content is a list of
    ``{"type": "text", "text": ...}`` / ``{"type": "image"}`` items.

    ``<image>`` in text and ``{"type": "image"}`` items are placeholders. Their count must equal
    the number of images; a prompt with no placeholder gets all its images in front of the
    first user turn (the RLAIF-V / RLHF-V convention of questions without placeholders).
    """
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        messages = prompt
    else:
        raise where.error(field, f"is neither text nor a list of chat messages (got {type(prompt).__name__})",
                          "Give the question as text or as [{'role': 'user', 'content': ...}, ...]")
    out = [{"role": m["role"], "content": _content_items(m.get("content"), where, field)} for m in messages]
    placeholders = sum(item["type"] == "image" for m in out for item in m["content"])
    if placeholders == 0 and n_images > 0:
        first_user = next((m for m in out if m["role"] == "user"), None)
        if first_user is None:
            raise where.error(field, "has no user turn to attach the images to", "Add a user message")
        first_user["content"] = [{"type": "image"}] * n_images + first_user["content"]
    elif placeholders != n_images:
        more = "more" if placeholders > n_images else "fewer"
        raise where.error(field, f"has {placeholders} image placeholders but the row has {n_images} images "
                                 f"({more} placeholders than images)",
                          "Give one <image> placeholder per image, or none to put every image first")
    return out


def _content_items(content: Any, where: RowRef, field: str) -> list[dict]:
    """Text with ``<image>`` markers, or content items, as a list of typed items."""
    if isinstance(content, str):
        items: list[dict] = []
        for k, piece in enumerate(content.split(IMAGE_PLACEHOLDER)):
            if k > 0:
                items.append({"type": "image"})
            if piece.strip():
                items.append({"type": "text", "text": piece.strip()})
        return items
    if isinstance(content, list):
        items = []
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "image":
                items.append({"type": "image"})
            elif kind == "text":
                items.extend(_content_items(item.get("text") or "", where, field))
            else:
                raise where.error(field, f"has a content item of unknown type {kind!r}",
                                  "Use {'type': 'text', 'text': ...} or {'type': 'image'} items")
        return items
    raise where.error(field, f"has message content of type {type(content).__name__}", "Give text or a list of items")


def encode_pair(processor, messages: list[dict], images: list, chosen: str, rejected: str,
                max_length: int | None, where: RowRef, repairs: Counter | None = None,
                truncation: str = "keep_start") -> EncodedPair:
    """Token ids of the prompt (image placeholders expanded, BOS included) and of each
    response (closed by EOS: :mod:`mmalign.modalities.tokens.responses`), with responses
    shortened by ``truncation`` to fit ``max_length``; the prompt is never cut."""
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = processor(text=[text], images=images or None, return_tensors="pt",
                      add_special_tokens=adds_bos(processor.tokenizer, text))["input_ids"][0].tolist()
    sides = [_response_ids(processor.tokenizer, response) for response in (chosen, rejected)]
    try:
        prompt_ids, keep = fit(prompt_ids, [len(ids) for ids, _ in sides], max_length, truncation)
    except PromptTooLong as exc:
        raise _prompt_too_long(processor, prompt_ids, exc.max_length, where) from None
    (chosen_ids, chosen_offsets), (rejected_ids, rejected_offsets) = [(i[k], o[k]) for (i, o), k in zip(sides, keep)]
    cut = sum(len(ids) > k.stop - k.start for (ids, _), k in zip(sides, keep))
    if repairs is not None and cut:
        repairs["responses truncated to max_length"] += cut
    return EncodedPair(prompt_ids, chosen_ids, rejected_ids, chosen_offsets, rejected_offsets)


def _prompt_too_long(processor, prompt_ids: list[int], max_length: int, where: RowRef) -> DataError:
    image_id = getattr(processor, "image_token_id", None)
    n_image_tokens = sum(t == image_id for t in prompt_ids)
    return where.error(
        "images" if n_image_tokens else "prompt",
        f"the prompt is {len(prompt_ids)} tokens ({n_image_tokens} of them image tokens), which "
        f"leaves no room for a response within max_length={max_length}; truncating would cut "
        "into the prompt's image tokens",
        "Raise the modality option max_length, or use fewer / smaller images for this row")


def _response_ids(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Response tokens and their character spans; the closing EOS has an empty span at the end."""
    out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    span, close = response_span(out["input_ids"], tokenizer.bos_token_id, tokenizer.eos_token_id)
    ids, offsets = list(out["input_ids"])[span], [tuple(o) for o in out["offset_mapping"]][span]
    if close:
        ids, offsets = ids + [tokenizer.eos_token_id], offsets + [(len(text), len(text))]
    return ids, offsets
