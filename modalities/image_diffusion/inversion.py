"""InPO's draw: x_t from a few-step DDIM inversion of the image latents under the current model.

Lu et al. 2025, InPO: Inversion Preference Optimization with Reparametrized DDIM for Efficient
Diffusion Model Alignment (arXiv:2503.18454). Instead of forward noising
``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e`` with random ``e``, each image is carried to ``x_t``
by deterministic DDIM inversion (Song et al. 2021, eq. 13 run backwards) under the model, and
the noise it implies, ``e = (x_t - sqrt(a_t) x_0) / sqrt(1 - a_t)``, is the training target. The
Diffusion-DPO surrogate is then taken at that ``x_t``. Because the draw runs the model, the
modality sets ``policy_dependent_draw``.

The inversion grid is ``K = inversion_steps`` trailing timesteps ``T k / K - 1`` (``K`` divides ``T``,
so each inverse step starts exactly where the previous one ended); each row's
timestep is one of them, drawn from its own generator, and both images of a pair use it.
"""
from __future__ import annotations

import torch
from diffusers import DDIMInverseScheduler, DDPMScheduler, UNet2DConditionModel
from torch import Tensor

from mmalign.modality import row_generator
from mmalign.surrogate import Batch, Draw

from mmalign.modalities.denoising.surrogate import side_major
from mmalign.modalities.image_diffusion.conditioning import Frozen
from mmalign.modalities.image_diffusion.surrogate import conditions, latents_of, unet_prediction

SALT = "image_diffusion/inversion"


def inverse_scheduler(scheduler: DDPMScheduler, steps: int) -> DDIMInverseScheduler:
    inverse = DDIMInverseScheduler.from_config(scheduler.config, timestep_spacing="trailing",
                                               set_alpha_to_one=True, clip_sample=False)
    inverse.set_timesteps(steps)
    return inverse


def grid_indices(batch: Batch, seed: int, steps: int) -> Tensor:
    """Each row's number of inversion steps, 1..K, from its own generator."""
    return torch.stack([torch.randint(1, steps + 1, (), generator=row_generator(seed, sid, batch.epoch, SALT))
                        for sid in batch.sample_id])


@torch.no_grad()
def inversion_draw(model: UNet2DConditionModel, scheduler: DDPMScheduler, frozen: Frozen, base: Draw,
                   indices: Tensor, steps: int, scaling_factor: float) -> Draw:
    """Add ``noisy`` and ``noise`` ``[B, S, C, h, w]`` and the grid ``timesteps`` to ``base``
    (whose latent sample, flip, crop and caption dropout are kept). ``frozen`` is the batch's
    conditioning under ``base`` (``Batch.frozen``); nothing of it goes into the draw."""
    inverse = inverse_scheduler(scheduler, steps)
    grid = inverse.timesteps.to(frozen.mean.device)
    latents = latents_of(frozen, base, scaling_factor)
    b, s = latents.shape[:2]
    x = side_major(latents)
    rows_k = indices.repeat(s).to(x.device)
    embeds, pooled, ids = conditions(frozen, s, with_mismatched=False)
    noisy = torch.empty_like(x)
    for j in range(int(indices.max())):
        level = grid[j - 1] if j > 0 else torch.zeros((), dtype=grid.dtype, device=grid.device)
        t_in = level.expand(len(x))
        prediction = unet_prediction(model, x, t_in, embeds, pooled, ids).to(x.dtype)
        x = inverse.step(prediction, int(grid[j]), x).prev_sample
        done = rows_k == j + 1
        noisy[done] = x[done]
    t = grid[indices.to(grid.device) - 1]
    alpha = scheduler.alphas_cumprod.to(x.device)[t.repeat(s)].view(-1, 1, 1, 1).to(x.dtype)
    noise = (noisy - alpha.sqrt() * side_major(latents)) / (1 - alpha).sqrt()
    unflat = lambda v: v.unflatten(0, (s, b)).transpose(0, 1)  # noqa: E731 - side-major back to [B, S]
    values = dict(base.values, timesteps=t.cpu(), noisy=unflat(noisy), noise=unflat(noise))
    return Draw(values)
