"""What the audio-diffusion modality keeps in the frozen-work cache, so an epoch never runs the
audio VAE or the text encoders (storage, keys and atomic writes:
:mod:`mmalign.modalities.frozen_cache`).

Opened for the frozen models' weights and the preprocessing (kind, clip length, rate, mel,
caption length). One entry per pair, keyed by caption, lyrics and the clips' content digests:
``mean``, ``logvar`` ``[S, ...]`` (the VAE posterior of each clip, kept as a distribution so
training samples a fresh latent per step) and ``prompt_embeds`` ``[L, D]``; the entry
``empty_prompt`` holds the unconditional states.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from mmalign.models.audio_diffusion import AudioParts

from mmalign.modalities import frozen_cache
from mmalign.modalities.audio_diffusion.conditioning import pad
from mmalign.modalities.audio_diffusion.encode import condition, empty_condition, posterior
from mmalign.modalities.audio_diffusion.options import AudioOptions
from mmalign.modalities.audio_diffusion.records import record_waves
from mmalign.modalities.frozen_cache import FrozenCache
from mmalign.modalities.image_diffusion.cache import EMPTY

logger = logging.getLogger("mmalign.audio_diffusion")
VERSION = 1


def open_cache(cache_dir: str, parts: AudioParts, options: AudioOptions, frames: int | None) -> FrozenCache:
    config = {"version": VERSION, "kind": parts.kind, "seconds": options.seconds, "rate": parts.sample_rate,
              "mel": parts.mel, "frames": frames, "max_sequence_length": options.max_sequence_length}
    dtype = getattr(torch, options.cache_dtype) if options.cache_dtype else None
    return FrozenCache.open(cache_dir, "audio_diffusion", frozen_cache.weights_hash(parts.frozen_modules()), config,
                            dtype)


def record_key(record: dict) -> list[str]:
    return ["record", record["prompt"], record.get("lyrics", ""), *record["digests"]]


def encode_record(parts: AudioParts, record: dict, options: AudioOptions, frames: int | None) -> dict:
    waves = record_waves(record, parts.sample_rate, parts.channels, options)
    mean, logvar = posterior(parts, waves, frames)
    embeds = condition(parts, record["prompt"], record.get("lyrics", ""), options.seconds,
                       options.max_sequence_length)
    return {"mean": mean, "logvar": logvar, "prompt_embeds": embeds}


def write_cache(records: list[dict], cache_dir: str, parts: AudioParts, options: AudioOptions,
                frames: int | None) -> list[dict]:
    """Encode every record not cached yet; return the records, each with its ``cache_file``."""
    cache = open_cache(cache_dir, parts, options, frames)
    cache.get_or_compute(EMPTY, lambda: {"prompt_embeds": empty_condition(parts, options.max_sequence_length)})
    todo = 0
    for r in records:
        if not cache.has(record_key(r)):
            cache.put(record_key(r), encode_record(parts, r, options, frames))
            todo += 1
    logger.info("cache %s: %d records, %d newly encoded", cache.folder, len(records), todo)
    return [dict(r, cache_file=str(cache.path(record_key(r)))) for r in records]


def read_cached(records: list[dict]) -> dict[str, torch.Tensor]:
    """The batch's cached posteriors ``[B, S, ...]``, padded conditioning, lengths and the
    empty condition."""
    loaded = [frozen_cache.read(r["cache_file"]) for r in records]
    embeds, lengths = pad([t["prompt_embeds"] for t in loaded])
    empty = FrozenCache(Path(records[0]["cache_file"]).parent).get(EMPTY)["prompt_embeds"]
    return {"mean": torch.stack([t["mean"] for t in loaded]), "logvar": torch.stack([t["logvar"] for t in loaded]),
            "prompt_embeds": embeds, "lengths": lengths, "empty": empty}
