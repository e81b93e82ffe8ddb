"""Sampling images from a trained SD3 / FLUX transformer through its diffusers pipeline.

The pipeline is the frozen parts with the transformer put back
(:meth:`mmalign.models.flow.FlowParts.with_transformer`), sampling with the model's own
``FlowMatchEulerDiscreteScheduler``. Every image has its own generator, as in the
image-diffusion plugin (:func:`~mmalign.modalities.image_diffusion.sampling.image_generators`),
so a prompt's images depend on its prompt and seed alone.
"""
from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torch import nn

from mmalign.models.flow import FlowParts

from mmalign.modalities.image_diffusion.sampling import Sampling, image_generators


@torch.no_grad()
def sample_images(parts: FlowParts, model: nn.Module, prompts: Sequence[str], n: int, seeds: Sequence[int],
                  how: Sampling, max_sequence_length: int) -> list[list[Image.Image]]:
    """``n`` images per prompt, one list per prompt; prompt ``i``'s from ``seeds[i]``."""
    pipe = parts.with_transformer(model)
    pipe.set_progress_bar_config(disable=True)
    images = list(pipe(prompt=list(prompts), num_images_per_prompt=n, generator=image_generators(seeds, n),
                       num_inference_steps=how.steps, guidance_scale=how.guidance_scale, height=how.resolution,
                       width=how.resolution, max_sequence_length=max_sequence_length, output_type="pil").images)
    return [images[i * n:(i + 1) * n] for i in range(len(prompts))]
