"""What the image-diffusion modality keeps in the frozen-work cache, so an epoch never runs
the encoders (storage, keys and atomic writes: :mod:`mmalign.modalities.frozen_cache`).

The cache is opened for the frozen models' weights and the preprocessing (resolution, crop,
flip, the empty-prompt rule). One entry per record, keyed by its content (prompt and image
bytes; with ``crop: random`` also its sample id, which draws the crop), holding

* ``mean``, ``logvar`` ``[S, F, C, h, w]``: the VAE posterior of each image (winner first),
  kept as a distribution so that training still samples a fresh latent each step; ``F`` is 2
  with ``random_flip`` (both flips cached, the draw picks one) and 1 otherwise;
* ``prompt_embeds`` ``[L, D]``; SDXL, SD3 and FLUX: ``pooled`` ``[P]``; SDXL: ``time_ids`` ``[6]``;

and the entry ``empty_prompt``: the empty prompt's conditioning, for caption dropout.
The crop is fixed when the cache is written: the center, or with ``crop: random`` one crop
per record drawn from ``row_generator(seed=0, sample_id, epoch=0)``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from mmalign.data.io import RowRef
from mmalign.modality import row_generator
from mmalign.modalities import frozen_cache
from mmalign.modalities.frozen_cache import FrozenCache
from mmalign.modalities.image_diffusion.encode import Encoders, time_ids
from mmalign.modalities.image_diffusion.images import decode_rgb, pair_pixels
from mmalign.modalities.image_diffusion.options import ImageOptions

logger = logging.getLogger("mmalign.image_diffusion")
VERSION = 2
CHUNK = 8
EMPTY = "empty_prompt"


def open_cache(cache_dir: str, encoders: Encoders, options: ImageOptions, name: str = "image_diffusion") -> FrozenCache:
    """The cache of these frozen models under this preprocessing, in ``cache_dir/<name>``."""
    config = {"version": VERSION, "resolution": options.resolution, "crop": options.crop,
              "random_flip": options.random_flip, **encoders.config}
    dtype = getattr(torch, options.cache_dtype) if options.cache_dtype else None
    weights = frozen_cache.weights_hash(encoders.modules)
    return FrozenCache.open(cache_dir, name, weights, config, dtype)


def record_key(record: dict, options: ImageOptions) -> list[bytes | str]:
    """What a record's entry depends on: its prompt and image bytes, and with random crops
    the sample id its crop is drawn from."""
    crop = [record["sample_id"]] if options.crop == "random" else []
    return ["record", record["prompt"], *record["images"], *crop]


def write_cache(records: list[dict], cache_dir: str, encoders: Encoders, options: ImageOptions,
                name: str = "image_diffusion") -> list[dict]:
    """Encode every record not cached yet; return the records, each with its ``cache_file``."""
    cache = open_cache(cache_dir, encoders, options, name)
    cache.get_or_compute(EMPTY, lambda: {k: v[0] for k, v in encoders.empty().items()})
    todo = _missing(records, cache, options)
    for start in range(0, len(todo), CHUNK):
        _encode_chunk(todo[start:start + CHUNK], cache, encoders, options)
    if options.random_flip:
        logger.info("cache %s: both flips of every image cached; the draw picks one per step", cache.folder)
    if options.crop == "random":
        logger.info("cache %s: random crops are fixed once per record when cached", cache.folder)
    size = sum(f.stat().st_size for f in cache.folder.glob("*.safetensors"))
    logger.info("cache %s: %d records, %d newly encoded, %.1f MiB on disk (%s)", cache.folder, len(records),
                len(todo), size / 2**20, options.cache_dtype or "stored as computed")
    return [dict(r, cache_file=str(cache.path(record_key(r, options)))) for r in records]


def _missing(records: list[dict], cache: FrozenCache, options: ImageOptions) -> list[dict]:
    """The records whose entry is not cached yet, one per entry (equal content encodes once)."""
    missing = {}
    for r in records:
        path = cache.path(record_key(r, options))
        if not path.is_file():
            missing.setdefault(path, r)
    return list(missing.values())


def _crop_for(record: dict, options: ImageOptions) -> tuple[float, float]:
    if options.crop == "center":
        return 0.5, 0.5
    u = torch.rand(2, generator=row_generator(0, record["sample_id"], 0, "image_diffusion/cache_crop"))
    return float(u[0]), float(u[1])


@torch.no_grad()
def _encode_chunk(records: list[dict], cache: FrozenCache, encoders: Encoders, options: ImageOptions) -> None:
    flips = (False, True) if options.random_flip else (False,)
    pixels, ids = [], []
    for r in records:
        where = RowRef(r["file"], r["row"])
        images = [decode_rgb(data, where, "image")[0] for data in r["images"]]
        crop = _crop_for(r, options)
        per_flip = [pair_pixels(images, options.resolution, crop, f) for f in flips]
        pixels.append(torch.stack([p[0] for p in per_flip], dim=1))  # [S, F, 3, R, R]
        ids.append(time_ids(per_flip[0][1], per_flip[0][2], options.resolution))
    stacked = torch.stack(pixels)  # [N, S, F, 3, R, R]
    lead = stacked.shape[:3]
    mean, logvar = encoders.latents(stacked.flatten(0, 2))
    text = encoders.prompts([r["prompt"] for r in records])
    for i, r in enumerate(records):
        tensors = {"mean": mean.unflatten(0, lead)[i], "logvar": logvar.unflatten(0, lead)[i],
                   **{key: value[i] for key, value in text.items()}}
        if encoders.time_ids:
            tensors.update(time_ids=ids[i])
        cache.put(record_key(r, options), tensors)


def read_cached(records: list[dict]) -> dict[str, torch.Tensor]:
    """Stack the cached tensors of ``records`` along a new batch axis."""
    loaded = [frozen_cache.read(r["cache_file"]) for r in records]
    return {key: torch.stack([t[key] for t in loaded]) for key in loaded[0]}


def read_empty(cache_file: str) -> dict[str, torch.Tensor]:
    """The empty-prompt conditioning of the cache a record's entry is in, ``[1, ...]`` each."""
    loaded = FrozenCache(Path(cache_file).parent).get(EMPTY)
    return {k: v[None] for k, v in loaded.items()}
