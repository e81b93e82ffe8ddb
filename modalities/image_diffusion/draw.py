"""The randomness of a Diffusion-DPO step, drawn once per pair from per-row generators.

Each row's values come from ``row_generator(seed, sample_id, epoch, "image_diffusion")`` in a
fixed order: the denoising library's timestep, noise and latent sample
(:func:`mmalign.modalities.denoising.draw.denoising_values`), then this plugin's
caption-dropout decision, flip and crop. So a row gets the same values wherever it lands
(batch order, composition, world size, resume), and the chosen and the rejected image of a
pair share every value, as in Wallace et al. 2023 (Diffusion-DPO, arXiv:2311.12908).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from mmalign.surrogate import Batch, Draw

from mmalign.modalities.denoising.draw import TimestepSampler, denoising_values, per_row, uniform_timestep

SALT = "image_diffusion"


@dataclass(frozen=True)
class DrawShape:
    """What a draw needs to know about the model and the options."""

    latent_shape: tuple[int, int, int]  # (C, h, w) of the denoiser's input
    num_train_timesteps: int
    caption_dropout: float
    random_flip: bool
    random_crop: bool
    #: the timestep density; uniform over ``num_train_timesteps`` when None (DDPM training)
    sample_t: Optional[TimestepSampler] = None

    def sampler(self) -> TimestepSampler:
        return self.sample_t or uniform_timestep(self.num_train_timesteps)


def forward_draw(batch: Batch, seed: int, shape: DrawShape, salt: str = SALT) -> Draw:
    """Per-row ``timesteps`` ``[B]`` (from ``shape``'s sampler), ``noise`` and
    ``latent_eps`` ``[B, C, h, w]`` (the latter samples the VAE posterior), ``drop`` and
    ``flip`` ``[B]`` booleans, ``crop`` ``[B, 2]`` fractions of the free room (0.5 = center)."""
    return per_row(batch.sample_id, seed, batch.epoch, salt, lambda gen: _row(gen, shape))


def _row(gen: torch.Generator, shape: DrawShape) -> dict[str, torch.Tensor]:
    # always draw every value in this order, so turning one option on never shifts the others
    values = denoising_values(gen, shape.latent_shape, shape.sampler())
    drop = torch.rand((), generator=gen) < shape.caption_dropout
    flip = (torch.rand((), generator=gen) < 0.5) & shape.random_flip
    crop = torch.rand(2, generator=gen) if shape.random_crop else torch.full((2,), 0.5)
    return {**values, "drop": drop, "flip": flip, "crop": crop}
