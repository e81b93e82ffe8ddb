"""What the frozen-work cache benchmarks share: a timed LoRA DPO step of a denoising plugin,
and the cache-on / cache-off comparison in interleaved repetitions with the cache's size.

A step is: collate, draw, policy surrogate with gradient, reference surrogate (the same
model, adapters off) without, DPO loss, backward, AdamW step. ``build(cache, cache_dtype)``
returns ``(modality, policy, records)`` with the LoRA injected and ``prepare`` run.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from mmalign.testing import dpo_step


def timed_steps(arm, steps: int, batch_size: int, epoch0: int, beta: float) -> float:
    """Median seconds of ``steps`` steps of ``arm`` (modality, policy, records, optimizer)."""
    modality, policy, records, optimizer = arm
    batches = [records[i:i + batch_size] for i in range(0, len(records), batch_size)]
    times = []
    for i in range(steps):
        start = time.perf_counter()
        batch = modality.collate(batches[i % len(batches)])
        batch.epoch = epoch0 + i // len(batches)
        dpo_step(modality, policy, batch, optimizer, beta)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_cache(build: Callable, repeats: int, steps: int, batch_size: int, beta: float) -> dict:
    """Seconds per step with the cache off and on (interleaved: a busy neighbour hits both
    arms alike), the speedup per repetition, and the cache's size in float32 and bfloat16."""
    arms = {}
    for name, cache in (("cache_off", False), ("cache_on", True)):
        modality, policy, records = build(cache, None)
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
        arms[name] = (modality, policy, records, optimizer)
        timed_steps(arms[name], 1, batch_size, 0, beta)  # warm-up
    runs = {name: [] for name in arms}
    for rep in range(repeats):
        for name, arm in arms.items():
            runs[name].append(timed_steps(arm, steps, batch_size, 1 + rep, beta))
    sizes = {}
    for dtype in (None, "bfloat16"):
        _, _, records = build(True, dtype)
        sizes[f"cache_megabytes_{dtype or 'float32'}"] = round(
            sum(Path(r["cache_file"]).stat().st_size for r in records) / 2 ** 20, 4)
    ratios = [off / on for off, on in zip(runs["cache_off"], runs["cache_on"])]
    return {"batch_size": batch_size, "steps": steps, "repeats": repeats, "torch_threads": torch.get_num_threads(),
            "statistic": "median step per repetition", "seconds_per_step": runs,
            "median": {k: statistics.median(v) for k, v in runs.items()},
            "speedup_off_over_on": {"median": round(statistics.median(ratios), 3),
                                    "min_max": [round(min(ratios), 3), round(max(ratios), 3)]}, **sizes}
