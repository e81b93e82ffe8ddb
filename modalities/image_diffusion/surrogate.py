"""The Diffusion-DPO likelihood surrogate of a batch under one SD 1.5 / SDXL UNet.

Wallace et al. 2023 (arXiv:2311.12908): ``s = -0.5 * mean((prediction - target)^2)`` per
image (:func:`mmalign.modalities.denoising.surrogate.per_sample`, which says why ``beta``
keeps its meaning), the target as the scheduler's ``prediction_type`` says
(:mod:`mmalign.modalities.denoising.targets`). What is the UNet's own lives here: its inputs
(text embeddings, SDXL's pooled embedding and time ids) and the one forward over winners and
losers.
"""
from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor

from mmalign.surrogate import Draw, Surrogate

from mmalign.modalities.denoising import targets
from mmalign.modalities.denoising.draw import posterior_sample
from mmalign.modalities.denoising.surrogate import assemble, mismatched, per_sample, side_major
from mmalign.modalities.image_diffusion.conditioning import Frozen


def latents_of(frozen: Frozen, draw: Draw, scaling_factor: float) -> Tensor:
    """A sample of each image's VAE posterior, scaled for the UNet: ``[B, S, C, h, w]``.
    The pair shares ``latent_eps``, like every other draw."""
    eps = draw["latent_eps"].to(frozen.mean)[:, None]
    return posterior_sample(frozen.mean, frozen.logvar, eps) * scaling_factor


def noised(scheduler: DDPMScheduler, latents: Tensor, draw: Draw) -> tuple[Tensor, Tensor]:
    """``(noise, x_t)`` per image ``[B, S, C, h, w]``: forward noising with the pair's shared
    noise and timestep, or the draw's own ``noisy`` / ``noise`` (DDIM inversion)."""
    if "noisy" in draw:
        return draw["noise"].to(latents), draw["noisy"].to(latents)
    return targets.noisy_pairs(scheduler, latents, draw["noise"], draw["timesteps"])


def unet_prediction(model: UNet2DConditionModel, x_t: Tensor, t: Tensor, embeds: Tensor,
                    pooled: Tensor | None, time_ids: Tensor | None) -> Tensor:
    dtype = model.dtype
    added = None
    if model.config.addition_embed_type == "text_time":
        added = {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(x_t.device, dtype)}
    return model(x_t.to(dtype), t, encoder_hidden_states=embeds.to(dtype), added_cond_kwargs=added).sample


def conditions(frozen: Frozen, sides: int, with_mismatched: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(embeds, pooled, time_ids)`` for the side-major forward: each row's conditioning once
    per side, then, with ``with_mismatched``, every row under the previous row's caption (its
    own time ids: they describe the image)."""
    embeds, pooled, ids = frozen.prompt_embeds, frozen.pooled, frozen.time_ids
    repeat = lambda t: t.repeat(sides, *([1] * (t.ndim - 1))) if t is not None else None  # noqa: E731
    out = [repeat(embeds), repeat(pooled), repeat(ids)]
    if with_mismatched:
        extra = (mismatched(embeds), mismatched(pooled), ids)
        out = [torch.cat([a, b]) if a is not None else None for a, b in zip(out, extra)]
    return out[0], out[1], out[2]


def diffusion_surrogate(model: UNet2DConditionModel, scheduler: DDPMScheduler, frozen: Frozen, draw: Draw,
                        scaling_factor: float, with_mismatched: bool = False) -> tuple[Surrogate, Tensor]:
    """The surrogate of every image from one UNet forward over winners and losers (and, with
    ``with_mismatched``, the winners again under the caption of the previous row: Diffusion-KTO's
    mismatched pairs for its KL estimate).

    Returns the surrogate and the per-image values ``[S * B (+ B)]`` in forward order.
    """
    latents = latents_of(frozen, draw, scaling_factor)
    b, s = latents.shape[:2]
    noise, x_t = noised(scheduler, latents, draw)
    t_all = draw["timesteps"].to(latents.device).repeat(s + int(with_mismatched))
    x_in, x0_in, eps_in = side_major(x_t), side_major(latents), side_major(noise)
    if with_mismatched:  # the winners' inputs again, for their mismatched captions
        x_in, x0_in, eps_in = (torch.cat([v, v[:b]]) for v in (x_in, x0_in, eps_in))
    prediction = unet_prediction(model, x_in, t_all, *conditions(frozen, s, with_mismatched))
    values = per_sample(prediction, targets.target(scheduler, x0_in, eps_in, t_all))
    return assemble(values, b, s, with_mismatched), values
