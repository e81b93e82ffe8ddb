"""The randomness of a video Diffusion-DPO step, drawn once per pair from per-row generators.

Each row's values come from ``row_generator(seed, sample_id, epoch, "video_diffusion")`` in a
fixed order: the denoising library's time, noise and VAE-posterior sample
(:func:`mmalign.modalities.denoising.draw.denoising_values`), each the shape of one clip's
latent ``[C, T', H', W']``, then the caption-dropout decision. The chosen and the rejected clip
of a pair share all of them, as in Diffusion-DPO (Wallace et al. 2023, arXiv:2311.12908).

Times: Wan draws a flow time in (0, 1) from the options' density, shifted as its scheduler
config says (:func:`flow_shift_config`); CogVideoX an integer timestep uniform over its 1000
training steps, as CogVideoX's own fine-tuning script draws it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from mmalign.errors import ConfigError
from mmalign.surrogate import Batch, Draw

from mmalign.modalities.denoising.draw import TimestepSampler, denoising_values, per_row

SALT = "video_diffusion"


def flow_shift_config(scheduler_config: Mapping) -> dict:
    """A flow scheduler's config as :func:`~mmalign.modalities.denoising.flow_time.scheduler_shift`
    reads it. Wan's diffusers checkpoints ship ``UniPCMultistepScheduler`` with flow sigmas,
    whose shift is ``flow_shift``; a ``FlowMatchEulerDiscreteScheduler`` config passes as it is."""
    cfg = dict(scheduler_config)
    if not (cfg.get("use_flow_sigmas") or ("flow_shift" in cfg and "shift" not in cfg)):
        return cfg
    if cfg.get("use_dynamic_shifting"):
        raise ConfigError("the scheduler config uses flow sigmas with use_dynamic_shifting; only a static "
                          "flow_shift maps to a training-time shift here")
    return {"shift": float(cfg.get("flow_shift", 1.0))}


def video_draw(batch: Batch, seed: int, latent_shape: Sequence[int], sample_t: TimestepSampler,
               caption_dropout: float) -> Draw:
    """Per row: ``timesteps`` ``[B]``, ``noise`` and ``latent_eps`` ``[B, C, T', H', W']``,
    ``drop`` ``[B]`` booleans."""
    def row(gen: torch.Generator) -> dict[str, torch.Tensor]:
        values = denoising_values(gen, latent_shape, sample_t)
        return {**values, "drop": torch.rand((), generator=gen) < caption_dropout}

    return per_row(batch.sample_id, seed, batch.epoch, SALT, row)
