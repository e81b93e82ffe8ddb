"""The transformer's inputs that do not depend on the trained model, for one batch and draw.

From the cache (no encoder runs) or computed now (the video VAE and the text encoder), the
result is the image plugins' :class:`~mmalign.modalities.image_diffusion.conditioning.Frozen`:
VAE posteriors ``[B, S, C, T', H', W']`` (winner first) and ``prompt_embeds`` ``[B, L, D]``,
with the draw's caption dropout applied by the same
:func:`~mmalign.modalities.image_diffusion.conditioning.apply_dropout`. It is kept in
``Batch.frozen`` (:func:`memoised`), so policy and reference of a step encode the batch once.
"""
from __future__ import annotations

from typing import Callable

import torch

from mmalign.surrogate import Batch, Draw

from mmalign.modalities.image_diffusion import conditioning as image_conditioning
from mmalign.modalities.image_diffusion.conditioning import Frozen, apply_dropout
from mmalign.modalities.image_diffusion.encode import Encoders

#: the ``Batch.frozen`` key of the conditioning
KEY = "video_diffusion"


def memoised(batch: Batch, draw: Draw, compute: Callable[[], Frozen]) -> Frozen:
    """``batch.frozen``'s conditioning, computed anew only for another draw's caption dropout
    (the image plugins' memo, keyed on the one augmentation clips have)."""
    return image_conditioning.memoised(batch, draw, compute, keys=("drop",), key=KEY)


def from_cache(inputs: dict, draw: Draw) -> Frozen:
    """The cached posteriors and embeddings of the batch, with caption dropout."""
    frozen = Frozen(mean=inputs["mean"], logvar=inputs["logvar"], prompt_embeds=inputs["prompt_embeds"])
    return apply_dropout(frozen, draw["drop"], inputs["empty"])


def compute(encoders: Encoders, inputs: dict, draw: Draw, empty: dict[str, torch.Tensor]) -> Frozen:
    """Run the VAE once on all clips of the batch ``[B, S, 3, T, H, W]`` and the text encoder
    once on its prompts."""
    pixels = inputs["pixels"]
    b, s = pixels.shape[:2]
    mean, logvar = encoders.latents(pixels.flatten(0, 1))
    text = encoders.prompts(list(inputs["prompts"]))
    frozen = Frozen(mean=mean.unflatten(0, (b, s)), logvar=logvar.unflatten(0, (b, s)),
                    prompt_embeds=text["prompt_embeds"])
    return apply_dropout(frozen, draw["drop"], empty)
