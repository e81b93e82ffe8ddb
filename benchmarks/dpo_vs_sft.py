"""Seconds per step of DPO with a precomputed reference against SFT on the same packed
tokens, for text and for the vision-language model, side by side in one run.

    python benchmarks/dpo_vs_sft.py [--repeats 5] [--steps 12]

Both arms score the packed ``[prompt | chosen | rejected]`` sequence once per pair (the
prompt, and for the VLM the image, once), so the forward and backward are the same work;
DPO adds only the reference read from disk and a logistic loss. The physical floor of the
ratio is therefore 1.0. Repetitions are interleaved; each arm's step time is its training
loop's seconds over its steps (the precompute pass is reported apart, per epoch it stores).
Writes benchmarks/results/dpo_vs_sft.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vision_language"))


def text_recipe(out: str) -> dict:
    return {"model": {"modality": "text", "builder": "tiny_llama",
                      "builder_args": {"hidden_size": 64, "layers": 2, "heads": 4},
                      "lora": {"r": 8, "alpha": 16}, "options": {"max_length": 48, "packed": True}},
            "data": {"train": str(ROOT / "assets/text_prefs/train.jsonl"), "schema": "preference"}}


def vl_recipe(out: str) -> dict:
    from vl_helpers import write_colour_set

    data = write_colour_set(Path(out).parent / "data")
    return {"model": {"modality": "vision_language", "builder": "tiny_llava", "lora": {"r": 8, "alpha": 16},
                      "options": {"max_length": 64, "packed": True}},
            "data": {"train": data, "schema": "rlaif_v"}}


def one_run(make, objective: str, steps: int) -> dict:
    from mmalign import config
    from mmalign.train.run import train

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        raw = config.merge(make(out), {
            "objective": {"name": objective, "params": {"beta": 0.1} if objective == "dpo" else {}},
            "reference": {"strategy": "precomputed" if objective == "dpo" else "none",
                          "precompute_with": "adapters_off"},
            "train": {"seed": 0, "batch_size": 4, "lr": 1e-4, "max_steps": steps, "shuffle": False},
            "logging": {"output_dir": out, "tensorboard": False, "progress": False}})
        session = train(config.from_dict(raw, source=f"<{objective}>"))
    return {"seconds_per_step": session.seconds["train_loop"] / steps,
            "precompute_seconds": session.seconds.get("precompute", 0.0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"threads": 1, "repeats": args.repeats, "steps": args.steps, "modalities": {}}
    for name, make in (("text", text_recipe), ("vision_language", vl_recipe)):
        runs = {"dpo": [], "sft": []}
        for _ in range(args.repeats):  # interleaved
            for objective in runs:
                runs[objective].append(one_run(make, objective, args.steps))
        per_step = {k: [r["seconds_per_step"] for r in v] for k, v in runs.items()}
        median = {k: statistics.median(v) for k, v in per_step.items()}
        result["modalities"][name] = {
            "seconds_per_step": per_step, "median": median,
            "min_max": {k: [min(v), max(v)] for k, v in per_step.items()},
            "dpo_over_sft": median["dpo"] / median["sft"],
            "precompute_pass_seconds": statistics.median(r["precompute_seconds"] for r in runs["dpo"]),
        }
    out = ROOT / "benchmarks" / "results" / "dpo_vs_sft.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("median", "dpo_over_sft", "precompute_pass_seconds")}
                      for k, v in result["modalities"].items()}, indent=1))


if __name__ == "__main__":
    main()
