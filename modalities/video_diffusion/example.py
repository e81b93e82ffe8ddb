"""A tiny model and a few rows of this plugin, for ``mmalign check-plugin video_diffusion``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmalign.modality import ModelSpec
from mmalign.models.video_diffusion import TINY_FRAMES, TINY_SIZE

from mmalign.modalities.video_io import write_mp4


def moving_square(colour: tuple[int, int, int], frames: int = TINY_FRAMES, size: int = TINY_SIZE,
                  step: int = 2) -> np.ndarray:
    """uint8 ``[frames, size, size, 3]``: a ``colour`` square moving right on grey."""
    clip = np.full((frames, size, size, 3), 96, np.uint8)
    side = size // 3
    for i in range(frames):
        left = (i * step) % (size - side)
        clip[i, side:2 * side, left:left + side] = colour
    return clip


def write_pairs(root: Path, rows: int = 4, frames: int = TINY_FRAMES, size: int = TINY_SIZE) -> Path:
    """``rows`` pairs preferring a warm moving square to a cold one, as MP4 files and a
    ``pairs.jsonl`` with relative paths and a score per pair."""
    lines = []
    for i in range(rows):
        for side, colour in (("chosen", (220, 60 + 30 * i, 30)), ("rejected", (30, 60 + 30 * i, 220))):
            write_mp4(moving_square(colour, frames, size), root / f"{side}-{i}.mp4", fps=8)
        lines.append({"prompt": f"a warm square moving right {i}", "chosen_video": f"chosen-{i}.mp4",
                      "rejected_video": f"rejected-{i}.mp4", "score": 0.5 + 0.1 * i})
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return data


def example(folder: str) -> dict[str, Any]:
    """The tiny Wan at 32 x 32 px, 9 frames, on four warm-over-cold pairs."""
    return {"spec": ModelSpec(builder="tiny_wan"), "data": str(write_pairs(Path(folder))),
            "options": {"height": TINY_SIZE, "width": TINY_SIZE, "num_frames": TINY_FRAMES, "max_sequence_length": 16},
            "schema": "video_diffusion:video_pairs"}
