"""Sampling images from a trained UNet through the diffusers pipelines, and PNG grids.

Every image has its own CPU generator, seeded from its prompt's seed and its index among the
prompt's images, and the pipelines take the list of generators: a prompt's images depend on
its prompt and seed alone, never on which other prompts share the call. With a start image
(``init``) and a ``strength`` the img2img pipeline built from the same components denoises
partially from it (SDEdit, Meng et al. 2022).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import (DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline,
                       UNet2DConditionModel)
from PIL import Image

from mmalign.errors import ConfigError
from mmalign.modality import row_generator
from mmalign.models.diffusion import DiffusionParts

from mmalign.modalities.image_diffusion.export import is_sdxl, pipeline_class
from mmalign.modalities.image_diffusion.images import center_square

SALT = "image_diffusion/sample"


@dataclass(frozen=True)
class Sampling:
    """How to sample: pixel size, denoising steps, classifier-free guidance scale."""

    resolution: int
    steps: int
    guidance_scale: float


def build_pipeline(parts: DiffusionParts, unet: UNet2DConditionModel, img2img: bool = False):
    """The diffusers pipeline of ``unet`` with the frozen parts, with a DDIM sampler (the
    training DDPM schedule, sampled in few steps); ``img2img``: its image-to-image twin."""
    scheduler = DDIMScheduler.from_config(parts.scheduler.config)
    common = dict(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=unet,
                  scheduler=scheduler)
    if is_sdxl(unet):
        cls = StableDiffusionXLImg2ImgPipeline if img2img else pipeline_class(unet)
        return cls(text_encoder_2=parts.text_encoder_2, tokenizer_2=parts.tokenizer_2,
                   force_zeros_for_empty_prompt=parts.force_zeros_for_empty_prompt, **common)
    cls = StableDiffusionImg2ImgPipeline if img2img else pipeline_class(unet)
    return cls(safety_checker=None, feature_extractor=None, requires_safety_checker=False, **common)


def image_generators(seeds: Sequence[int], n: int) -> list[torch.Generator]:
    """One generator per image, prompt-major: image ``j`` of prompt ``i`` from ``(seeds[i], j)``."""
    return [row_generator(seed, str(j), 0, SALT) for seed in seeds for j in range(n)]


@torch.no_grad()
def sample_images(parts: DiffusionParts, unet: UNet2DConditionModel, prompts: Sequence[str], n: int,
                  seeds: Sequence[int], how: Sampling, init: Sequence[Image.Image] | None = None,
                  strength: float | None = None) -> list[list[Image.Image]]:
    """``n`` images per prompt, one list per prompt; prompt ``i``'s from ``seeds[i]``."""
    pipe = build_pipeline(parts, unet, img2img=init is not None)
    pipe.set_progress_bar_config(disable=True)
    args = dict(prompt=list(prompts), num_images_per_prompt=n, generator=image_generators(seeds, n),
                num_inference_steps=how.steps, guidance_scale=how.guidance_scale, output_type="pil")
    if init is None:
        args.update(height=how.resolution, width=how.resolution)
    else:
        args.update(image=start_images(init, len(prompts), n, how.resolution), strength=strength)
    images = list(pipe(**args).images)
    return [images[i * n:(i + 1) * n] for i in range(len(prompts))]


def start_images(init: Sequence[Image.Image], prompts: int, n: int, resolution: int) -> list[Image.Image]:
    """Each prompt's start image, center-cropped to ``resolution`` and repeated for its ``n``
    images (prompt-major, as the pipeline orders its batch)."""
    if len(init) != prompts:
        raise ConfigError(f"sample: got {len(init)} init images for {prompts} prompts; give one per prompt")
    squares = [center_square(image, resolution) for image in init]
    return [image for image in squares for _ in range(n)]


def check_strength(init, strength: float | None, steps: int) -> None:
    """``init`` and ``strength`` come together; ``strength`` in (0, 1] must leave at least one
    of the ``steps`` denoising steps (the pipeline runs ``int(steps * strength)`` of them)."""
    if (init is None) != (strength is None):
        raise ConfigError("sample: give init (one start image per prompt) and strength in (0, 1] together")
    if strength is not None and not (0 < strength <= 1 and int(steps * strength) >= 1):
        raise ConfigError(f"sample: strength must be in (0, 1] and leave at least one of the {steps} "
                          f"sample_steps (int(steps * strength) >= 1); got {strength!r}")


def save_grid(images: list[Image.Image], path: str, columns: int) -> str:
    """Write ``images`` as one PNG grid, ``columns`` wide, row-major."""
    if not images:
        raise ValueError("save_grid needs at least one image")
    w, h = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, image in enumerate(images):
        grid.paste(image.resize((w, h)), ((i % columns) * w, (i // columns) * h))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"  # written aside and renamed: a reader never sees half a PNG
    grid.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
