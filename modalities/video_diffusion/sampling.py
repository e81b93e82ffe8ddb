"""Sampling clips from a trained Wan / CogVideoX transformer through its diffusers pipeline,
and writing them as the run's validation samples.

The pipeline is the frozen parts with the transformer put back
(:meth:`mmalign.models.video_diffusion.VideoParts.with_transformer`), sampling with the model's
own scheduler. Every clip has its own generator, as in the image plugins
(:func:`~mmalign.modalities.image_diffusion.sampling.image_generators`), so a prompt's clips
depend on its prompt and seed alone.

A set of samples is written three ways beside each other: ``<name>.mp4`` (H.264) and
``<name>.gif`` (an animation any browser plays, what the run report shows), both with PyAV,
and ``<name>.png``, a strip of frames (the report's fallback, and a still for any viewer).
Each holds one grid: a row per prompt, a column per sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmalign.models.video_diffusion import VideoParts

from mmalign.modalities.image_diffusion.sampling import image_generators, save_grid
from mmalign.modalities.video_io import write_gif, write_mp4

#: frames of a clip shown in a PNG strip
STRIP_FRAMES = 8


@dataclass(frozen=True)
class VideoSampling:
    """How to sample: size, frames, denoising steps, guidance scale, caption length."""

    height: int
    width: int
    num_frames: int
    steps: int
    guidance_scale: float
    max_sequence_length: int


@torch.no_grad()
def sample_videos(parts: VideoParts, model: nn.Module, prompts: Sequence[str], n: int, seeds: Sequence[int],
                  how: VideoSampling) -> list[list[torch.Tensor]]:
    """``n`` clips per prompt, uint8 ``[T, H, W, 3]`` each, one list per prompt; prompt ``i``'s
    from ``seeds[i]``."""
    pipe = parts.with_transformer(model)
    pipe.set_progress_bar_config(disable=True)
    frames = pipe(prompt=list(prompts), num_videos_per_prompt=n, generator=image_generators(seeds, n),
                  num_inference_steps=how.steps, guidance_scale=how.guidance_scale, height=how.height,
                  width=how.width, num_frames=how.num_frames, max_sequence_length=how.max_sequence_length,
                  output_type="np").frames
    clips = [torch.from_numpy(np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)) for f in frames]
    return [clips[i * n:(i + 1) * n] for i in range(len(prompts))]


def grid_frames(clips: list[torch.Tensor], columns: int) -> np.ndarray:
    """Clips of one size as one clip ``[T, rows * H, columns * W, 3]``, row-major; black where
    a row is short."""
    t, h, w, _ = clips[0].shape
    rows = -(-len(clips) // columns)
    grid = np.zeros((t, rows * h, columns * w, 3), np.uint8)
    for i, clip in enumerate(clips):
        r, c = divmod(i, columns)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = clip.numpy()
    return grid


def write_video_samples(clips: list[torch.Tensor], out_path: str, columns: int, fps: float) -> str:
    """``out_path`` with its suffix replaced by ``.mp4``, ``.gif`` and ``.png`` (a strip of up to
    :data:`STRIP_FRAMES` frames of the grid, left to right); returns the PNG's path."""
    if not clips:
        raise ValueError("write_video_samples needs at least one clip")
    grid = grid_frames(clips, columns)
    base = Path(out_path).with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(grid, f"{base}.mp4", fps)
    write_gif(grid, f"{base}.gif", fps)
    picks = np.unique(np.linspace(0, len(grid) - 1, min(STRIP_FRAMES, len(grid))).round().astype(int))
    return save_grid([Image.fromarray(grid[i]) for i in picks], f"{base}.png", columns=len(picks))
