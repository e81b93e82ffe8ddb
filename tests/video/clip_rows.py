"""Plain helpers of the video-language tests: noise clips and images written to disk, rows of
the ``video_qa`` and ``rlaif_v`` schemas over them, and the tiny modalities that read them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mmalign.modalities.video_io import write_mp4
from mmalign.modalities.vision_language.modality import VisionLanguageModality
from mmalign.modality import ModelSpec

ANSWERS = [("the dog is running on the grass", "a cat is sleeping"),
           ("a red car on the road", "two people near a tree"),
           ("a bird in the sky", "the dog is sleeping on a bench"),
           ("a cat near the car", "a person on the grass")]


def write_clips(folder: Path, count: int, frames: int = 8, size: tuple[int, int] = (32, 32),
                fps: float = 8) -> list[str]:
    """``count`` clips of uint8 noise (every patch differs), ``frames`` frames each at ``fps``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        pixels = np.random.default_rng(k).integers(0, 256, (frames, *size, 3), dtype=np.uint8)
        write_mp4(pixels, folder / f"clip{k}.mp4", fps=fps)
        names.append(f"clip{k}.mp4")
    return names


def write_video_rows(folder: Path, count: int = 4, name: str = "clips.jsonl", **clip_args) -> str:
    """``video_qa`` rows, one clip each, with a rejected clip (the next one) for mDPO-style terms."""
    clips = write_clips(folder, count, **clip_args)
    rows = [{"video": clip, "question": "What happens in the clip?", "chosen": ANSWERS[k % 4][0],
             "rejected": ANSWERS[k % 4][1], "rejected_video": clips[(k + 1) % count]}
            for k, clip in enumerate(clips)]
    return _write(folder / name, rows)


def write_image_rows(folder: Path, sizes: tuple[tuple[int, int], ...] = ((32, 32), (48, 32), (32, 64), (40, 40)),
                     name: str = "images.jsonl") -> str:
    """``rlaif_v`` rows over noise images of different sizes (under a pixel budget: different grids)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (width, height) in enumerate(sizes):
        pixels = np.random.default_rng(100 + k).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image{k}.png")
        rows.append({"image": f"image{k}.png", "question": "What is in the image?", "chosen": ANSWERS[k % 4][0],
                     "rejected": ANSWERS[k % 4][1]})
    return _write(folder / name, rows)


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def tiny_modality(builder: str, **options) -> tuple[VisionLanguageModality, object]:
    """The modality with its tiny policy loaded (video_frames 4 unless given)."""
    modality = VisionLanguageModality(**{"max_length": 256, "video_frames": 4, **options})
    policy = modality.load_policy(ModelSpec(builder=builder))
    return modality, policy
