"""The UNet's inputs that do not depend on the trained model, for one batch and draw.

From the cache (no encoder runs) or computed now (VAE and text encoders), the result is the
same :class:`Frozen` value, with the draw's flip, crop and caption dropout applied. The
modality keeps it in ``Batch.frozen`` (:func:`memoised`), so policy and reference share it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from mmalign.surrogate import Batch, Draw

from mmalign.modalities.image_diffusion.encode import Encoders, time_ids
from mmalign.modalities.image_diffusion.images import pair_pixels


@dataclass
class Frozen:
    """VAE posteriors ``[B, S, C, h, w]`` of the ``S`` images of each row (winner first) and
    the text conditioning: ``prompt_embeds`` ``[B, L, D]``, SDXL ``pooled`` ``[B, P]`` and
    ``time_ids`` ``[B, 6]``."""

    mean: Tensor
    logvar: Tensor
    prompt_embeds: Tensor
    pooled: Tensor | None = None
    time_ids: Tensor | None = None

    def to(self, device: torch.device) -> "Frozen":
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return Frozen(move(self.mean), move(self.logvar), move(self.prompt_embeds), move(self.pooled),
                      move(self.time_ids))


#: the ``Batch.frozen`` key of the conditioning, and the draw values it depends on
KEY = "image_diffusion"
AUGMENTATION = ("drop", "flip", "crop")


def memoised(batch: Batch, draw: Draw, compute: Callable[[], Frozen], keys: tuple[str, ...] = AUGMENTATION,
             key: str = KEY) -> Frozen:
    """``batch.frozen[key]``'s conditioning, computed by ``compute()`` when absent or made for
    another draw's values of ``keys`` (flip, crop, caption dropout: a batch drawn again with
    another seed or epoch), so policy and reference of one step encode the batch once."""
    augmentation = [draw[k].cpu() for k in keys]  # Batch.to may have moved the memo's copy
    memo = batch.frozen.get(key)
    if memo is None or not all(torch.equal(a.cpu(), b) for a, b in zip(memo["augmentation"], augmentation)):
        memo = batch.frozen[key] = {"augmentation": augmentation, "inputs": compute()}
    return memo["inputs"]


def from_cache(inputs: dict, draw: Draw, empty: dict[str, Tensor]) -> Frozen:
    """Pick each row's flip out of the cached pair of flips and apply caption dropout."""
    mean, logvar = inputs["mean"], inputs["logvar"]  # [B, S, F, C, h, w], F = 1 or 2 flips
    index = draw["flip"].long() if mean.shape[2] == 2 else torch.zeros(len(mean), dtype=torch.long)
    rows = torch.arange(len(mean))
    frozen = Frozen(mean=mean[rows, :, index], logvar=logvar[rows, :, index],
                    prompt_embeds=inputs["prompt_embeds"], pooled=inputs.get("pooled"),
                    time_ids=inputs.get("time_ids"))
    return apply_dropout(frozen, draw["drop"], empty)


def compute(encoders: Encoders, inputs: dict, draw: Draw, resolution: int, empty: dict[str, Tensor]) -> Frozen:
    """Run the VAE once on all images of the batch and the text encoders once on its prompts."""
    pixels, ids = [], []
    for i, images in enumerate(inputs["images"]):
        crop = (float(draw["crop"][i, 0]), float(draw["crop"][i, 1]))
        pix, original, top_left = pair_pixels(images, resolution, crop, bool(draw["flip"][i]))
        pixels.append(pix)
        ids.append(time_ids(original, top_left, resolution))
    stacked = torch.stack(pixels)  # [B, S, 3, R, R]
    b, s = stacked.shape[:2]
    mean, logvar = encoders.latents(stacked.flatten(0, 1))
    text = encoders.prompts(list(inputs["prompts"]))
    frozen = Frozen(mean=mean.unflatten(0, (b, s)), logvar=logvar.unflatten(0, (b, s)),
                    prompt_embeds=text["prompt_embeds"], pooled=text.get("pooled"),
                    time_ids=torch.stack(ids) if encoders.time_ids else None)
    return apply_dropout(frozen, draw["drop"], empty)


def apply_dropout(frozen: Frozen, drop: Tensor, empty: dict[str, Tensor]) -> Frozen:
    """Rows whose caption is dropped get the empty prompt's conditioning (time ids stay)."""
    if not bool(drop.any()):
        return frozen
    keep = ~drop.to(frozen.prompt_embeds.device)
    embeds = torch.where(keep[:, None, None], frozen.prompt_embeds, empty["prompt_embeds"].to(frozen.prompt_embeds))
    pooled = frozen.pooled
    if pooled is not None:
        pooled = torch.where(keep[:, None], pooled, empty["pooled"].to(pooled))
    return Frozen(frozen.mean, frozen.logvar, embeds, pooled, frozen.time_ids)
