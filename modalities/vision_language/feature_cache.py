"""Projected image, clip and sound features computed once, in ``prepare``, when the vision side is frozen.

Under LoRA on the language model (the default targets, :data:`LORA_TARGETS`) the vision tower
and the projector never change, yet a pair's images or clip would go through them at every
step of every epoch. With ``cache_vision_features: true`` the modality runs them once per row
before training, through :mod:`mmalign.modalities.frozen_cache` (atomic entries, keyed by the
decoded pixels and frames, under a folder keyed by the vision weights and the processor's
settings), and the packed path writes the stored features into the media-token slots instead;
a clip is then not even decoded again. An entry keeps, beside the features, the grids a 3-D
RoPE makes positions from (``image_grid_thw``, ``video_grid_thw``, ``second_per_grid_ts``).

The cache is refused (the features are computed live, as without it) when any vision or
projector weight trains or carries an adapter: cached features would then go stale. It holds
``n_tokens x hidden`` values per image or clip (LLaVA-1.5-7B: 576 x 4096, 4.5 MiB in bf16), so
it is opt-in.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from mmalign.modalities.frozen_cache import FrozenCache, read, weights_hash
from mmalign.modalities.tokens.forward import device_of, unwrap
from mmalign.modalities.vision_language.media import Media, Sampling, media_inputs, open_media
from mmalign.modalities.vision_language.vision import PIXELS, SHAPE_INPUTS, Features, media_features, vision_parts

log = logging.getLogger("mmalign")
VERSION = 2


def cache_features(model: nn.Module, processor, records: list[dict[str, Any]], cache_dir: str,
                   sampling: Sampling = Sampling()) -> list[dict[str, Any]]:
    """The records, each with ``media_features``: the cache file of its images' and clips' features."""
    config = unwrap(model).config
    settings = {"version": VERSION, "processor": _settings(getattr(processor, "image_processor", None)),
                "video_processor": _settings(getattr(processor, "video_processor", None)),
                "feature_extractor": _settings(getattr(processor, "feature_extractor", None)),
                "sampling": list(sampling), "layer": getattr(config, "vision_feature_layer", None),
                "select": getattr(config, "vision_feature_select_strategy", None)}
    cache = FrozenCache.open(cache_dir, "vision_language", weights_hash(vision_parts(model)), settings)
    out = []
    with torch.no_grad():
        for record in records:
            media = open_media(record, sampling)
            key = ["media", *(f"{image.size}" for image in media.images), *(image.tobytes() for image in media.images),
                   *(f"{clip.indices}" for clip in media.clips), *(clip.frames.numpy().tobytes() for clip in media.clips),
                   *(f"{sampling.audio_rate}:{len(wave)}" for wave in media.audios),
                   *(wave.numpy().tobytes() for wave in media.audios)]
            cache.get_or_compute(key, lambda: _entry(model, processor, record["prompt_text"], media))
            out.append({**record, "media_features": str(cache.path(key))})
    log.info("vision_language: image and clip features of %d records cached in %s", len(out), cache.folder)
    return out


def _settings(part) -> dict | None:
    return None if part is None else part.to_dict()


def _entry(model: nn.Module, processor, text: str, media: Media) -> dict[str, Tensor]:
    inputs = media_inputs(processor, [text], [media])
    if not inputs:
        return {"none": torch.zeros(0)}
    features = media_features(unwrap(model), {k: v.to(device_of(model)) for k, v in inputs.items()})
    return {**{k: v.cpu() for k, v in features.items()}, **{k: inputs[k] for k in SHAPE_INPUTS if k in inputs}}


def cached_features(records: list[dict[str, Any]]) -> tuple[Features, dict[str, Tensor]] | None:
    """Every image's and clip's features of the batch, each kind in row order, and their
    grids, when every record has them cached."""
    if not records or not all("media_features" in r for r in records):
        return None
    entries = [read(r["media_features"]) for r in records]
    features = {kind: torch.cat(parts) for kind in PIXELS if (parts := [e[kind] for e in entries if kind in e])}
    shapes = {key: torch.cat(parts) for key in SHAPE_INPUTS if (parts := [e[key] for e in entries if key in e])}
    return features, shapes
