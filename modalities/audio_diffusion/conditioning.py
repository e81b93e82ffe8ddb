"""The denoiser's inputs that do not depend on the trained model, for one batch and draw.

Audio captions encode to sequences of their own length (see ``encode.py``), so the
conditioning is kept zero-padded with each row's ``lengths``; the forward runs rows of one
length together on exactly their own tokens (``forward.py``). It is kept in ``Batch.frozen``
through the image plugins' memo (:func:`~mmalign.modalities.image_diffusion.conditioning.memoised`,
keyed on caption dropout), so policy and reference of a step encode the batch once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from mmalign.surrogate import Batch, Draw

from mmalign.modalities.image_diffusion import conditioning as image_conditioning

KEY = "audio_diffusion"


@dataclass
class AudioFrozen:
    """VAE posteriors ``[B, S, ...]`` (winner first), conditioning ``[B, L, D]`` zero-padded
    past each row's ``lengths [B]``."""

    mean: Tensor
    logvar: Tensor
    prompt_embeds: Tensor
    lengths: Tensor

    def to(self, device: torch.device) -> "AudioFrozen":
        return AudioFrozen(self.mean.to(device), self.logvar.to(device), self.prompt_embeds.to(device),
                           self.lengths.to(device))


def pad(states: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Sequences ``[L_i, D]`` as ``[B, max L, D]`` (zeros past each) and their lengths."""
    lengths = torch.tensor([len(s) for s in states])
    out = states[0].new_zeros(len(states), int(lengths.max()), states[0].shape[-1])
    for i, s in enumerate(states):
        out[i, :len(s)] = s
    return out, lengths


def apply_dropout(frozen: AudioFrozen, drop: Tensor, empty: Tensor, broadcast: bool) -> AudioFrozen:
    """Dropped rows get the empty condition: ``empty`` itself, or (``broadcast``, ACE-Step's
    null embedding ``[1, D]``) spread over the row's length."""
    if not bool(drop.any()):
        return frozen
    rows = [s[:n] for s, n in zip(frozen.prompt_embeds, frozen.lengths.tolist())]
    for i in torch.nonzero(drop.cpu()).flatten().tolist():
        rows[i] = empty.to(rows[i]).expand(len(rows[i]), -1) if broadcast else empty.to(rows[i])
    embeds, lengths = pad(rows)
    return AudioFrozen(frozen.mean, frozen.logvar, embeds, lengths)


def memoised(batch: Batch, draw: Draw, compute: Callable[[], AudioFrozen]) -> AudioFrozen:
    return image_conditioning.memoised(batch, draw, compute, keys=("drop",), key=KEY)
