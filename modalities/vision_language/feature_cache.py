"""Projected image features computed once, in ``prepare``, when the vision side is frozen.

Under LoRA on the language model (the default targets, :data:`LORA_TARGETS`) the vision tower
and the projector never change, yet a pair's image would go through them at every step of
every epoch. With ``cache_image_features: true`` the modality runs them once per image before
training, through :mod:`mmalign.modalities.frozen_cache` (atomic entries, keyed by the image's
decoded pixels, under a folder keyed by the vision weights and the processor's settings), and
the packed path writes the stored features into the image-token slots instead.

The cache is refused (the features are computed live, as without it) when any vision or
projector weight trains or carries an adapter: cached features would then go stale. It holds
``n_image_tokens x hidden`` values per image (LLaVA-1.5-7B: 576 x 4096, 4.5 MiB in bf16), so
it is opt-in.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from mmalign.data.io import RowRef
from mmalign.modalities.frozen_cache import FrozenCache, read, weights_hash
from mmalign.modalities.tokens.forward import device_of, unwrap
from mmalign.modalities.vision_language.images import open_image
from mmalign.modalities.vision_language.vision import image_features, vision_parts

log = logging.getLogger("mmalign")
VERSION = 1
KEY = "features"


def cache_features(model: nn.Module, processor, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
    """The records, each with ``image_features``: the cache file of its images' features."""
    config = unwrap(model).config
    settings = {"version": VERSION, "processor": processor.image_processor.to_dict(),
                "layer": config.vision_feature_layer, "select": config.vision_feature_select_strategy}
    cache = FrozenCache.open(cache_dir, "vision_language", weights_hash(vision_parts(model)), settings)
    out = []
    with torch.no_grad():
        for record in records:
            images = [open_image(i, RowRef(record["file"], record["row"]), "image") for i in record["images"]]
            key = ["images", *(f"{image.size}" for image in images), *(image.tobytes() for image in images)]
            cache.get_or_compute(key, lambda: {KEY: _features(model, processor, images)})
            out.append({**record, "image_features": str(cache.path(key))})
    log.info("vision_language: image features of %d records cached in %s", len(out), cache.folder)
    return out


def _features(model: nn.Module, processor, images: list) -> Tensor:
    if not images:
        return torch.zeros(0)
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    return image_features(unwrap(model), pixels.to(device_of(model))).cpu()


def cached_features(records: list[dict[str, Any]]) -> Tensor | None:
    """Every image's features of the batch, in row order, when every record has them cached."""
    if not records or not all("image_features" in r for r in records):
        return None
    parts = [read(r["image_features"])[KEY] for r in records]
    parts = [p for p in parts if p.numel()]
    return torch.cat(parts) if parts else None
