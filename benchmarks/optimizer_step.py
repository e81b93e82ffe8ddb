"""Seconds per AdamW step: torch's default CPU path (a Python loop over parameters), the
foreach path, and the fused kernel the trainer uses, side by side in one run.

    python benchmarks/optimizer_step.py [--repeats 5] [--steps 50]

The parameters have the shapes of the LoRA adapters of the tiny LLaVA the trainer tests use
(``mmalign.models.llava.tiny_llava`` with LoRA r=4 on the language model's q/k/v/o
projections), so the ratio is the one a LoRA run sees. Repetitions are interleaved; the JSON
holds every time, the medians, min-max, and how far each path's weights are from the loop's.
Writes benchmarks/results/optimizer_step.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mmalign.models.llava import tiny_llava
from mmalign.modalities.vision_language import LORA_TARGETS
from mmalign.train import adapters

PATHS = {"loop (torch's CPU default)": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def lora_shapes() -> list[torch.Size]:
    model = tiny_llava()
    adapters.add_lora(model, r=4, alpha=8, dropout=0.0, target_modules=LORA_TARGETS)
    return [p.shape for p in model.parameters() if p.requires_grad]


def one_run(shapes, kwargs: dict, steps: int) -> tuple[float, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **kwargs)
    started = time.perf_counter()
    for _ in range(steps):
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
    seconds = (time.perf_counter() - started) / steps
    return seconds, torch.cat([p.detach().flatten() for p in params])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    shapes = lora_shapes()
    times = {name: [] for name in PATHS}
    weights = {}
    for _ in range(args.repeats):  # interleaved, so load on the machine hits every path alike
        for name, kwargs in PATHS.items():
            seconds, weights[name] = one_run(shapes, kwargs, args.steps)
            times[name].append(seconds)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    base = "loop (torch's CPU default)"
    result = {
        "what": "seconds per AdamW step over the LoRA parameters of the tiny LLaVA (r=4)",
        "parameters": len(shapes), "elements": sum(int(torch.Size(s).numel()) for s in shapes),
        "threads": torch.get_num_threads(), "repeats": args.repeats, "steps": args.steps,
        "seconds": times, "median": median,
        "min_max": {name: [min(ts), max(ts)] for name, ts in times.items()},
        "ratio_to_loop": {name: median[name] / median[base] for name in PATHS},
        "max_weight_gap_to_loop": {name: float((weights[name] - weights[base]).abs().max()) for name in PATHS},
    }
    out = Path(__file__).parent / "results" / "optimizer_step.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("median", "ratio_to_loop", "max_weight_gap_to_loop")}, indent=1))


if __name__ == "__main__":
    main()
