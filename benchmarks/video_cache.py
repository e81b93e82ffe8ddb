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
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig

import mmalign.objectives as objectives
from mmalign.modality import ModelSpec
from mmalign.train.adapters import adapters_disabled, inject

from mmalign.modalities.video_diffusion import VideoDiffusionModality
from mmalign.modalities.video_diffusion.example import write_pairs

OPTIONS = {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16, "caption_dropout": 0.1}


def build(cache: bool, data: str, folder: Path, cache_dtype: str | None = None):
    torch.manual_seed(0)
    modality = VideoDiffusionModality(cache=cache, cache_dtype=cache_dtype, **OPTIONS)
    policy = modality.load_policy(ModelSpec(builder="tiny_wan"))
    inject(policy, LoraConfig(r=4, lora_alpha=4, target_modules=list(modality.lora_target_modules)))
    records = modality.prepare(modality.load_records(data), str(folder / f"cache-{cache_dtype}"))
    return modality, policy, records


def timed_steps(arm, steps: int, batch_size: int, epoch0: int) -> float:
    """Median seconds of ``steps`` steps of ``arm`` (modality, policy, records, optimizer)."""
    modality, policy, records, optimizer = arm
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    times = []
    for i in range(steps):
        start = time.perf_counter()
        batch = modality.collate(batches[i % len(batches)])
        batch.epoch = epoch0 + i // len(batches)
        draw = modality.draw(batch, 0, policy)
        pol = modality.surrogate(policy, batch, draw, frozenset())
        with torch.no_grad(), adapters_disabled(policy):
            ref = modality.surrogate(policy, batch, draw, frozenset())
        loss = objectives.get("dpo")(pol, ref, beta=100.0).loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
        arms = {}
        for name, cache in (("cache_off", False), ("cache_on", True)):
            modality, policy, records = build(cache, data, folder)
            optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
            arms[name] = (modality, policy, records, optimizer)
            timed_steps(arms[name], 1, args.batch, 0)  # warm-up
        runs = {name: [] for name in arms}
        for rep in range(args.repeats):  # interleaved: a busy neighbour hits both arms alike
            for name, arm in arms.items():
                runs[name].append(timed_steps(arm, args.steps, args.batch, 1 + rep))
        sizes = {}
        for dtype in (None, "bfloat16"):
            _, _, records = build(True, data, folder, dtype)
            sizes[f"cache_megabytes_{dtype or 'float32'}"] = round(
                sum(Path(r["cache_file"]).stat().st_size for r in records) / 2 ** 20, 4)
    ratios = [off / on for off, on in zip(runs["cache_off"], runs["cache_on"])]
    result = {"model": "tiny_wan (LoRA r=4, reference = adapters off)",
              "clips": f"{OPTIONS['num_frames']} frames of {OPTIONS['height']} x {OPTIONS['width']} px (MP4)",
              "batch_size": args.batch, "steps": args.steps, "repeats": args.repeats, "torch_threads": 1,
              "statistic": "median step per repetition", "seconds_per_step": runs,
              "median": {k: statistics.median(v) for k, v in runs.items()},
              "speedup_off_over_on": {"median": round(statistics.median(ratios), 3),
                                      "min_max": [round(min(ratios), 3), round(max(ratios), 3)]}, **sizes}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
