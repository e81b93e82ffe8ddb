"""Seconds per tiny-SD3 Flow-DPO step with the frozen-work cache (text encoders and VAE run
once, before training) against one without (CLIP-L, CLIP-G, T5 and the VAE encoder run at
every step), interleaved in one run.

    python benchmarks/flow_cache.py [--repeats 5] [--steps 10] [--batch 4] [--resolution 64]

A step is: collate, draw, policy surrogate with gradient, reference surrogate (the same
transformer, adapters off) without, DPO loss, backward, AdamW step. The tiny model's encoders
are small next to its transformer, far smaller than SD3's T5-XXL is next to its MMDiT, so the
ratio here is a floor of what the cache saves on the real model. Also the cache's size on disk
with float32 and bfloat16 storage. Writes benchmarks/results/flow_cache.json.
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

from mmalign.modalities.image_flow import ImageFlowModality

sys.path.insert(0, str(Path(__file__).parent))
from cache_arms import compare_cache  # noqa: E402
from diffusion_cache import _data  # noqa: E402  (the same random image pairs)


def build(cache: bool, data: str, folder: Path, resolution: int, cache_dtype: str | None = None):
    torch.manual_seed(0)
    modality = ImageFlowModality(resolution=resolution, cache=cache, cache_dtype=cache_dtype, caption_dropout=0.1,
                                 max_sequence_length=16)
    policy = modality.load_policy(ModelSpec(builder="tiny_sd3"))
    inject(policy, LoraConfig(r=4, lora_alpha=4, target_modules=list(modality.lora_target_modules)))
    records = modality.prepare(modality.load_records(data, "pickapic"), str(folder / f"cache-{cache_dtype}"))
    return modality, policy, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "flow_cache.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # comparable numbers on a shared machine
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = _data(folder, rows=4 * args.batch, size=args.resolution + args.resolution // 4)
        compared = compare_cache(lambda cache, dtype: build(cache, data, folder, args.resolution, dtype),
                                 args.repeats, args.steps, args.batch, beta=100.0)
    result = {"model": "tiny_sd3 (LoRA r=4, reference = adapters off)", "resolution": args.resolution, **compared}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
