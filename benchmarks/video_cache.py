"""Seconds per tiny-Wan video-DPO step with the frozen-work cache (the causal video VAE and
UMT5 run once per clip pair and caption, before training) against one without (clips decoded,
resized and encoded, captions encoded, at every step), interleaved in one run.

    python benchmarks/video_cache.py [--repeats 7] [--steps 8] [--batch 2]

A step is: collate, draw, policy surrogate with gradient, reference surrogate (the same
transformer, adapters off) without, DPO loss, backward, AdamW step, on 9-frame 32 x 32 clips.
Also the cache's size on disk with float32 and bfloat16 storage. Writes
benchmarks/results/video_cache.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig

from mmalign.modality import ModelSpec
from mmalign.train.adapters import inject

from mmalign.modalities.video_diffusion import VideoDiffusionModality
from mmalign.modalities.video_diffusion.example import write_pairs

sys.path.insert(0, str(Path(__file__).parent))
from cache_arms import compare_cache  # noqa: E402

OPTIONS = {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16, "caption_dropout": 0.1}


def build(cache: bool, data: str, folder: Path, cache_dtype: str | None = None):
    torch.manual_seed(0)
    modality = VideoDiffusionModality(cache=cache, cache_dtype=cache_dtype, **OPTIONS)
    policy = modality.load_policy(ModelSpec(builder="tiny_wan"))
    inject(policy, LoraConfig(r=4, lora_alpha=4, target_modules=list(modality.lora_target_modules)))
    records = modality.prepare(modality.load_records(data), str(folder / f"cache-{cache_dtype}"))
    return modality, policy, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "video_cache.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # comparable numbers on a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = str(write_pairs(folder, rows=3 * args.batch))
        compared = compare_cache(lambda cache, dtype: build(cache, data, folder, dtype), args.repeats, args.steps,
                                 args.batch, beta=100.0)
    result = {"model": "tiny_wan (LoRA r=4, reference = adapters off)",
              "clips": f"{OPTIONS['num_frames']} frames of {OPTIONS['height']} x {OPTIONS['width']} px (MP4)",
              **compared}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
