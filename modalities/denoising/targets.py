"""The noisy input and the regression target of each prediction type.

DDPM-style schedules (``DDPMScheduler`` and its kin) use the scheduler's own helpers:
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e`` is ``scheduler.add_noise`` and the velocity
``v = sqrt(a_t) e - sqrt(1 - a_t) x_0`` is ``scheduler.get_velocity``; the target is ``e``
(epsilon models), ``v`` (v-prediction) or ``x_0`` (sample models), as the scheduler config's
``prediction_type`` says. With these targets the per-sample surrogate is the one of
Wallace et al. 2023 (Diffusion-DPO, arXiv:2311.12908).

Rectified flow (Esser et al. 2024, SD3, arXiv:2403.03206, sec. 3): ``x_t = (1 - t) x_0 + t e``
with ``t`` in [0, 1], target the velocity ``e - x_0``. A seam for flow-model plugins: written and
tested, used by no plugin yet.
"""
from __future__ import annotations

from torch import Tensor

from mmalign.errors import ConfigError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def noisy_input(scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e`` per row (``scheduler.add_noise``)."""
    return scheduler.add_noise(x0, noise, t)


def noisy_pairs(scheduler, latents: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(noise, x_t)`` of every sample of ``latents [B, S, ...]`` (``S`` samples per row, winner
    first), all ``S`` with their row's ``noise [B, ...]`` and timestep ``t [B]``."""
    noise = noise.to(latents)[:, None].expand_as(latents)
    t = t.to(latents.device)[:, None].expand(latents.shape[:2])
    x_t = noisy_input(scheduler, latents.flatten(0, 1), noise.flatten(0, 1), t.flatten())
    return noise, x_t.unflatten(0, latents.shape[:2])


def target(scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """The regression target of ``scheduler.config.prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return velocity(scheduler, x0, noise, t)
    if kind == "sample":
        return x0
    raise ConfigError(f"scheduler prediction_type {kind!r} is not one of {', '.join(PREDICTION_TYPES)}")


def velocity(scheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``v = alpha_t e - sigma_t x_0`` with ``alpha_t = sqrt(a_t)``, ``sigma_t = sqrt(1 - a_t)``
    (Salimans & Ho 2022, v-prediction; ``scheduler.get_velocity``)."""
    return scheduler.get_velocity(x0, noise, t)


def flow_noisy_input(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``x_t = (1 - t) x_0 + t e``, ``t [B]`` in [0, 1] broadcast over each row: the forward
    process ``a_t x_0 + b_t e`` with ``a_t = 1 - t``, ``b_t = t`` (Esser et al. 2024, sec. 3;
    what diffusers' flow-matching ``scale_noise`` computes at ``sigma = t``)."""
    t = t.to(x0).reshape(-1, *([1] * (x0.ndim - 1)))
    return (1 - t) * x0 + t * noise


def flow_velocity(x0: Tensor, noise: Tensor) -> Tensor:
    """The rectified-flow target ``d x_t / d t = e - x_0`` (Esser et al. 2024, sec. 3)."""
    return noise - x0
