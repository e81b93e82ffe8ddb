"""What the augmentation methods share: prompts as token ids, opening a record's images, and
turning a source record and a new rejected answer into a validated record."""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor

from mmalign.data.io import RowRef
from mmalign.errors import ConfigError
from mmalign.modalities.tokens.forward import device_of  # noqa: F401  (the augmentations' device)
from mmalign.modalities.tokens.responses import response_tokens, adds_bos
from mmalign.modalities.tokens.sampling import evaluating  # noqa: F401  (eval mode, no gradients)
from mmalign.modalities.vision_language.images import open_image
from mmalign.modalities.vision_language.records import make_record
from mmalign.modality import row_generator


def require_processor(modality, method: str):
    """The modality's processor; the policy (hence the processor) must be loaded first."""
    if getattr(modality, "processor", None) is None:
        raise ConfigError(f"{method} needs the vision_language modality's processor: call "
                          "modality.load_policy(...) before building rejected responses")
    return modality.processor


RECORD_KEYS = ("sample_id", "file", "row", "messages", "images", "chosen")


def require_records(records, method: str) -> None:
    """Refuse rows that did not come from ``modality.load_records`` (which validates them)."""
    for index, record in enumerate(records):
        missing = [key for key in RECORD_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise ConfigError(f"{method}: records[{index}] has no {', '.join(missing)}; pass records read "
                              "with modality.load_records(path, schema), not raw data rows")


def where(record: dict[str, Any]) -> RowRef:
    return RowRef(record["file"], record["row"])


def open_images(record: dict[str, Any]) -> list:
    """The record's images as RGB PIL images (errors name file, row and field)."""
    return [open_image(image, where(record), "image") for image in record["images"]]


def with_images(records: Iterable[dict[str, Any]], seed: int, method: str,
                skipped: Counter) -> Iterator[tuple[dict[str, Any], list, torch.Generator]]:
    """Each record that has images, with its opened images and its generator
    ``row_generator(seed, sample_id, 0, method)`` (so a record gets the same draws wherever it
    sits); records without images (nothing to distort) are counted in ``skipped[method]``."""
    for record in records:
        images = open_images(record)
        if not images:
            skipped[method] += 1
            continue
        yield record, images, row_generator(seed, record["sample_id"], 0, method)


def prompt_inputs(processor, messages: list[dict], images: list, device) -> tuple[Tensor, Tensor | None]:
    """``input_ids [1, L]`` of the chat prompt (image placeholders expanded, generation prompt
    appended) and ``pixel_values`` of its images, as the model reads them."""
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = processor(text=[text], images=images or None, return_tensors="pt",
                      add_special_tokens=adds_bos(processor.tokenizer, text))
    pixels = encoded.get("pixel_values")
    return encoded["input_ids"].to(device), None if pixels is None else pixels.to(device)


def text_ids(processor, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def response_ids(processor, text: str) -> list[int]:
    """Token ids of a response as it is scored: closed by EOS (:mod:`mmalign.modalities.tokens.responses`)."""
    tokenizer = processor.tokenizer
    return response_tokens(text_ids(processor, text), tokenizer.bos_token_id, tokenizer.eos_token_id)


def decode(processor, ids: list[int]) -> str:
    """Text of generated ids, special tokens (EOS, padding) dropped."""
    return processor.tokenizer.decode(ids, skip_special_tokens=True).strip()


def derived_record(source: dict[str, Any], suffix: str, *, messages: list[dict], images: list,
                   rejected: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A new pair with ``source``'s chosen answer and ``rejected``, validated like a loaded
    record; ``sample_id`` is ``<source id>/<suffix>``."""
    pair = {"prompt": messages, "images": images, "chosen": source["chosen"], "rejected": rejected}
    record = make_record(pair, where(source), f"{source['sample_id']}/{suffix}")
    record["augment"] = dict(meta)
    return record


def same_text(a: str, b: str) -> bool:
    """Equal up to case and whitespace (a word-level tokenizer lower-cases and re-spaces)."""
    return " ".join(a.lower().split()) == " ".join(b.lower().split())
