"""Sampling clips through the model's own pipeline, and the validation samples a run writes:
an MP4 and a GIF (PyAV) of one grid, and a PNG strip of its frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.errors import ConfigError

from mmalign.modalities.video_diffusion.sampling import grid_frames
from mmalign.modalities.video_io import read_clip

from video_helpers import make_modality


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((a.int() - b.int()).abs().max())


def test_clips_are_per_prompt_and_seed_and_written_three_ways(tmp_path):
    modality, policy = make_modality("cogvideox", sample_steps=2, guidance_scale=1.0)
    rows = modality.sample(policy, ["a cube", "a ball"], n=1, seeds=0)
    assert [len(r) for r in rows] == [1, 1]
    assert rows[0][0].shape == (9, 32, 32, 3) and rows[0][0].dtype == torch.uint8
    alone = modality.sample(policy, ["a ball"], n=1, seeds=[1])
    # the same start noise; a smaller batch only reorders float sums (a level or two of 255)
    assert _max_diff(alone[0][0], rows[1][0]) <= 2 < _max_diff(rows[0][0], rows[1][0])
    with pytest.raises(ConfigError, match="text-to-video only"):
        modality.sample(policy, ["a cube"], n=1, seeds=0, init=[rows[0][0]], strength=0.5)

    out = modality.write_samples(policy, ["a cube", "a ball"], 0, str(tmp_path / "samples" / "before.png"))
    assert out == str(tmp_path / "samples" / "before.png")
    grid = grid_frames([rows[0][0], rows[1][0]], columns=1)  # what write_samples drew, as one clip
    mp4 = read_clip(tmp_path / "samples" / "before.mp4", num_frames=9)
    assert mp4.fps == 8 and tuple(mp4.frames.shape) == grid.shape == (9, 64, 32, 3)
    assert np.abs(mp4.frames.numpy().astype(int) - grid.astype(int)).mean() < 12  # H.264 at crf 18
    gif = Image.open(tmp_path / "samples" / "before.gif")
    assert gif.n_frames == 9 and gif.size == (32, 64) and gif.info["duration"] in (120, 130)
    strip = Image.open(out)
    assert strip.size == (8 * 32, 64)  # 8 frames of the grid, left to right
    first = np.asarray(strip.convert("RGB"))[:, :32]
    assert np.array_equal(first, grid[0])
