"""The noisy inputs, regression targets and times of pairs, laid out side-major.

Latents come as ``[B, S, ...]`` (``S`` samples per row, winner first); every sample of a row
is noised with the row's one ``noise`` and ``t`` (Wallace et al. 2023, Diffusion-DPO,
arXiv:2311.12908: winner and loser go through the network at the same ``t`` with the same
noise), and the results are laid out side-major (all winners, then all losers), ready for one
forward over the batch. Shared by every denoising plugin, whatever its data.
"""
from __future__ import annotations

from torch import Tensor

from mmalign.surrogate import Draw

from mmalign.modalities.denoising import targets
from mmalign.modalities.denoising.surrogate import side_major


def flow_inputs(x0: Tensor, draw: Draw) -> tuple[Tensor, Tensor, Tensor]:
    """Rectified flow: ``(x_t, v, t)`` with ``x_t = (1 - t) x_0 + t e`` and ``v = e - x_0``
    (Esser et al. 2024, arXiv:2403.03206)."""
    b, s = x0.shape[:2]
    noise = draw["noise"].to(x0)[:, None].expand_as(x0)
    t = draw["timesteps"].to(x0)[:, None].expand(b, s)
    x_t = targets.flow_noisy_input(x0.flatten(0, 1), noise.flatten(0, 1), t.flatten()).unflatten(0, (b, s))
    v = targets.flow_velocity(x0, noise)
    return side_major(x_t), side_major(v), side_major(t)


def ddpm_inputs(scheduler, x0: Tensor, draw: Draw) -> tuple[Tensor, Tensor, Tensor]:
    """DDPM-style schedules: ``(x_t, target, t)``, the target as the scheduler's
    ``prediction_type`` says (epsilon, v or sample)."""
    b, s = x0.shape[:2]
    noise, x_t = targets.noisy_pairs(scheduler, x0, draw["noise"], draw["timesteps"])
    t = draw["timesteps"].to(x0.device)[:, None].expand(b, s)
    target = targets.target(scheduler, x0.flatten(0, 1), noise.flatten(0, 1), t.flatten()).unflatten(0, (b, s))
    return side_major(x_t), side_major(target), side_major(t)
