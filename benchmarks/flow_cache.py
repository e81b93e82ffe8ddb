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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig

import mmalign.objectives as objectives
from mmalign.modality import ModelSpec
from mmalign.train.adapters import adapters_disabled, inject

from mmalign.modalities.image_flow import ImageFlowModality

sys.path.insert(0, str(Path(__file__).parent))
from diffusion_cache import _data  # noqa: E402  (the same random image pairs)


def build(cache: bool, data: str, folder: Path, resolution: int, cache_dtype: str | None = None):
    torch.manual_seed(0)
    modality = ImageFlowModality(resolution=resolution, cache=cache, cache_dtype=cache_dtype, caption_dropout=0.1,
                                 max_sequence_length=16)
    policy = modality.load_policy(ModelSpec(builder="tiny_sd3"))
    inject(policy, LoraConfig(r=4, lora_alpha=4, target_modules=list(modality.lora_target_modules)))
    records = modality.prepare(modality.load_records(data, "pickapic"), str(folder / f"cache-{cache_dtype}"))
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
        arms = {}
        for name, cache in (("cache_off", False), ("cache_on", True)):
            modality, policy, records = build(cache, data, folder, args.resolution)
            optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
            arms[name] = (modality, policy, records, optimizer)
            timed_steps(arms[name], 1, args.batch, 0)  # warm-up
        runs = {name: [] for name in arms}
        for rep in range(args.repeats):  # interleaved: a busy neighbour hits both arms alike
            for name, arm in arms.items():
                runs[name].append(timed_steps(arm, args.steps, args.batch, 1 + rep))
        sizes = {}
        for dtype in (None, "bfloat16"):
            _, _, records = build(True, data, folder, args.resolution, dtype)
            sizes[f"cache_megabytes_{dtype or 'float32'}"] = round(
                sum(Path(r["cache_file"]).stat().st_size for r in records) / 2 ** 20, 4)
    ratios = [off / on for off, on in zip(runs["cache_off"], runs["cache_on"])]
    result = {"model": "tiny_sd3 (LoRA r=4, reference = adapters off)", "resolution": args.resolution,
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
