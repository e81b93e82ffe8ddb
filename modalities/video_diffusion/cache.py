"""What the video-diffusion modality keeps in the frozen-work cache, so an epoch never runs the
video VAE or the text encoder (storage, keys and atomic writes:
:mod:`mmalign.modalities.frozen_cache`).

The cache is opened for the frozen models' weights and the preprocessing (training size,
frames and how they are picked, caption length). One entry per clip pair and caption, keyed
by the caption and the clips' content digests, holding

* ``mean``, ``logvar`` ``[S, C, T', H', W']``: the causal VAE's posterior of each clip (winner
  first), kept as a distribution so that training still samples a fresh latent each step;
* ``prompt_embeds`` ``[L, D]``: the T5 / UMT5 embeddings of the caption;

and the entry ``empty_prompt`` (the image plugins' name): the empty caption's embeddings, for
caption dropout. Entries are read back by the image plugins' readers
(:func:`~mmalign.modalities.image_diffusion.cache.read_cached`, ``read_empty``).
"""
from __future__ import annotations

import logging

import torch

from mmalign.modalities import frozen_cache
from mmalign.modalities.frozen_cache import FrozenCache
from mmalign.modalities.image_diffusion.cache import EMPTY
from mmalign.modalities.image_diffusion.encode import Encoders
from mmalign.modalities.video_diffusion.clips import record_pixels
from mmalign.modalities.video_diffusion.options import VideoOptions

logger = logging.getLogger("mmalign.video_diffusion")
VERSION = 1
#: clip pairs per VAE call (a video VAE's activations are large)
CHUNK = 2


def open_cache(cache_dir: str, encoders: Encoders, options: VideoOptions, name: str = "video_diffusion") -> FrozenCache:
    """The cache of these frozen models under this preprocessing, in ``cache_dir/<name>-<key>``."""
    config = {"version": VERSION, "height": options.height, "width": options.width, "num_frames": options.num_frames,
              "sample_fps": options.sample_fps, **encoders.config}
    dtype = getattr(torch, options.cache_dtype) if options.cache_dtype else None
    return FrozenCache.open(cache_dir, name, frozen_cache.weights_hash(encoders.modules), config, dtype)


def record_key(record: dict) -> list[str]:
    """What a record's entry depends on: its caption and its clips' content."""
    return ["record", record["prompt"], *record["digests"]]


def write_cache(records: list[dict], cache_dir: str, encoders: Encoders, options: VideoOptions) -> list[dict]:
    """Encode every record not cached yet; return the records, each with its ``cache_file``."""
    cache = open_cache(cache_dir, encoders, options)
    cache.get_or_compute(EMPTY, lambda: {k: v[0] for k, v in encoders.empty().items()})
    missing: dict = {}
    for r in records:  # one per entry: equal content encodes once
        path = cache.path(record_key(r))
        if not path.is_file():
            missing.setdefault(path, r)
    todo = list(missing.values())
    for start in range(0, len(todo), CHUNK):
        _encode_chunk(todo[start:start + CHUNK], cache, encoders, options)
    size = sum(f.stat().st_size for f in cache.folder.glob("*.safetensors"))
    logger.info("cache %s: %d records, %d newly encoded, %.1f MiB on disk (%s)", cache.folder, len(records),
                len(todo), size / 2**20, options.cache_dtype or "stored as computed")
    return [dict(r, cache_file=str(cache.path(record_key(r)))) for r in records]


@torch.no_grad()
def _encode_chunk(records: list[dict], cache: FrozenCache, encoders: Encoders, options: VideoOptions) -> None:
    pixels = torch.stack([record_pixels(r, options.num_frames, options.sample_fps, options.height, options.width)
                          for r in records])  # [N, S, 3, T, H, W]
    lead = pixels.shape[:2]
    mean, logvar = encoders.latents(pixels.flatten(0, 1))
    text = encoders.prompts([r["prompt"] for r in records])
    for i, r in enumerate(records):
        cache.put(record_key(r), {"mean": mean.unflatten(0, lead)[i], "logvar": logvar.unflatten(0, lead)[i],
                                  **{key: value[i] for key, value in text.items()}})
