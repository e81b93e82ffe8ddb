"""Per-row draws of a denoising step: the timestep, the noise and the latent sample.

Every value of a row comes from its own generator,
``mmalign.modality.row_generator(seed, sample_id, epoch, salt)``, so a row gets the same draw
wherever it lands (batch order and composition, world size, resume). The chosen and the
rejected sample of a pair share every value, as in Wallace et al. 2023 (Diffusion-DPO,
arXiv:2311.12908), where both go through the network with the same ``t`` and noise.

Timestep samplers are plain functions of a generator. :func:`uniform_timestep` (DDPM-style
models) is the one in use; :func:`logit_normal_timestep` and :func:`shift_timestep` are the
rectified-flow samplers of Esser et al. 2024 (SD3, arXiv:2403.03206), ready for flow models.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from mmalign.modality import row_generator
from mmalign.surrogate import Draw

#: ``sampler(gen) -> t``: one row's timestep from its generator
TimestepSampler = Callable[[torch.Generator], Tensor]
RowValues = dict[str, Tensor]


def uniform_timestep(num_train_timesteps: int) -> TimestepSampler:
    """``t ~ U{0, ..., T - 1}``: the DDPM training schedule (int64)."""
    return lambda gen: torch.randint(0, num_train_timesteps, (), generator=gen)


def logit_normal_timestep(mean: float = 0.0, std: float = 1.0) -> TimestepSampler:
    """``t = sigmoid(mean + std * n)``, ``n ~ N(0, 1)``: SD3's logit-normal density
    ``pi(t) = 1 / (std sqrt(2 pi)) * 1 / (t (1 - t)) * exp(-(logit(t) - mean)^2 / (2 std^2))``
    on (0, 1) (Esser et al. 2024, sec. 3.1)."""
    return lambda gen: torch.sigmoid(mean + std * torch.randn((), generator=gen))


def shift_timestep(t: Tensor, shift: float) -> Tensor:
    """SD3's shift of a flow time ``t`` in [0, 1] towards noise:
    ``shift * t / (1 + (shift - 1) * t)`` (Esser et al. 2024, sec. 5.3.2; ``shift`` is
    ``sqrt(m / n)`` for ``m`` pixels against the ``n`` of the base resolution)."""
    return shift * t / (1 + (shift - 1) * t)


def shifted(sampler: TimestepSampler, shift: float) -> TimestepSampler:
    """``sampler``'s times, shifted by :func:`shift_timestep`."""
    return lambda gen: shift_timestep(sampler(gen), shift)


def denoising_values(gen: torch.Generator, latent_shape: Sequence[int], sample_t: TimestepSampler) -> RowValues:
    """One row's ``timesteps`` (a scalar), ``noise`` and ``latent_eps`` (``latent_shape``
    each), always drawn in this order, so a plugin drawing more values after them (caption
    dropout, crop, flip) never shifts these."""
    t = sample_t(gen)
    noise = torch.randn(tuple(latent_shape), generator=gen)
    latent_eps = torch.randn(tuple(latent_shape), generator=gen)
    return {"timesteps": t, "noise": noise, "latent_eps": latent_eps}


def per_row(sample_ids: Sequence[str], seed: int, epoch: int, salt: str,
            row: Callable[[torch.Generator], RowValues]) -> Draw:
    """A :class:`Draw` whose values are ``row(generator)`` of each row, stacked on a batch axis."""
    rows = [row(row_generator(seed, sid, epoch, salt)) for sid in sample_ids]
    return Draw({key: torch.stack([values[key] for values in rows]) for key in rows[0]})


def posterior_sample(mean: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """``mean + exp(logvar / 2) * eps``: a sample of the VAE posterior ``N(mean, exp(logvar))``
    from the row's ``latent_eps``, so a cached distribution still gives a fresh latent per
    draw, as ``latent_dist.sample()`` does in the SD training scripts."""
    return mean + torch.exp(0.5 * logvar) * eps
