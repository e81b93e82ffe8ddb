"""Seconds per tiny-Qwen2.5-VL video-DPO step, and clips the vision tower encodes per step,
three ways on the same batch of clips, interleaved in one run:

* ``naive`` (``packed: false``): chosen and rejected run as two sequences through the model's
  own forward, so each clip is encoded twice by the policy and twice more by the reference;
* ``packed`` (``cache_vision_features: false``): ``[prompt | chosen | rejected]`` as one row,
  each clip encoded once per step, and the adapters-off reference reads the policy's features
  (the batch's ``frozen`` memo);
* ``cached`` (``cache_vision_features: true``): each clip's features computed once, in
  ``modality.prepare``, before timing (that one-off time is reported on its own); a step
  decodes no clip and runs no vision tower.

    python benchmarks/vl_video.py [--repeats 7] [--steps 5] [--pairs 8] [--frames 8] [--size 64] [--threads 1]

A step is what the trainer does: a fresh ``modality.collate`` of the records (the cached arm
reads features from the cache and decodes nothing), draw, policy surrogate with gradient
(LoRA r=8 on the language model's q/k/v/o projections), reference surrogate of the same model
with its adapters off (``mmalign.train.adapters.disabler``) without, DPO loss (beta 0.1),
backward, AdamW step. Clips are noise MP4s (every patch differs), 8 frames of 64 x 64 px by
default: under the tiny processor's budget a clip is a (4, 8, 8) grid, 256 patches, 64 language
tokens. The vision tower is made as wide as the language model (both 64, 4 and 2 layers), so
it is a visible share of the step at tiny sizes, as it is in Qwen2.5-VL-7B (a 675M ViT over
every frame patch). Encodings are counted by wrapping
``Qwen2_5_VisionTransformerPretrainedModel.forward`` (rows of ``grid_thw``). Ratios are of
the medians of per-repetition medians. Writes benchmarks/results/vl_video.json.
"""
from __future__ import annotations

import os

# Read by the OpenMP runtime when torch loads, so set before it: workers that spin while they
# wait stall on a core other work holds. A value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl  # noqa: E402

import mmalign.objectives as objectives  # noqa: E402
from mmalign.modalities.video_io import write_mp4  # noqa: E402
from mmalign.modalities.vision_language import LORA_TARGETS, VisionLanguageModality  # noqa: E402
from mmalign.modality import ModelSpec  # noqa: E402
from mmalign.models.llava import tiny_vocabulary  # noqa: E402
from mmalign.train import adapters  # noqa: E402

#: tiny_qwen25_vl builder arguments: vision tower as wide as the language model
MODEL = {"hidden_size": 64, "num_layers": 2, "vision_hidden_size": 64, "vision_layers": 4}
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}
#: the arms: modality options besides the shared ones
ARMS = {"naive": {"packed": False, "cache_vision_features": False},
        "packed": {"packed": True, "cache_vision_features": False},
        "cached": {"packed": True, "cache_vision_features": True}}
BETA, LR = 0.1, 1e-4
NEEDS = frozenset({"token_logps"})


class TowerCount:
    """Clips (and images) the Qwen2.5-VL vision tower encodes: one per row of ``grid_thw``.
    Wraps the class's forward while the benchmark runs, so every model instance is counted."""

    def __init__(self):
        self.encoded = 0
        self._tower = modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel
        self._real = self._tower.forward

    def __enter__(self) -> "TowerCount":
        real, count = self._real, self

        def counting(tower, hidden_states, grid_thw, **kwargs):
            count.encoded += int(grid_thw.shape[0])
            return real(tower, hidden_states, grid_thw, **kwargs)

        self._tower.forward = counting
        return self

    def __exit__(self, *exc) -> None:
        self._tower.forward = self._real


def write_data(folder: Path, pairs: int, frames: int, size: int, answer_words: int) -> str:
    """``video_qa`` rows over ``pairs`` noise clips, with random-word answers."""
    rng = np.random.default_rng(0)
    words = [w for w in tiny_vocabulary() if w.isalpha()]
    rows = []
    for k in range(pairs):
        write_mp4(rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8), folder / f"clip{k}.mp4", fps=8)
        answer = lambda: " ".join(rng.choice(words, answer_words))  # noqa: E731
        rows.append({"video": f"clip{k}.mp4", "question": "What happens in the clip?", "chosen": answer(),
                     "rejected": answer()})
    path = folder / "clips.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def build(options: dict, data: str, cache_dir: Path, frames: int, counter: TowerCount) -> dict:
    """One arm: modality, LoRA policy (same seed, so the same weights in every arm), its
    adapters-off switch, optimizer and records; ``prepare`` timed (the cache's one-off pass)."""
    modality = VisionLanguageModality(max_length=1024, video_frames=frames, **options)
    policy = modality.load_policy(ModelSpec(builder="tiny_qwen25_vl", builder_args=MODEL)).train()
    adapters.add_lora(policy, target_modules=LORA_TARGETS, **LORA)
    records = modality.load_records(data, "vision_language:video_qa")
    before, start = counter.encoded, time.perf_counter()
    records = modality.prepare(records, str(cache_dir))
    prepare = {"seconds": time.perf_counter() - start, "clips_encoded": counter.encoded - before}
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=LR)
    return {"modality": modality, "policy": policy, "reference": adapters.disabler(policy), "optimizer": optimizer,
            "records": records, "prepare": prepare}


def step(arm: dict) -> tuple[float, torch.Tensor]:
    """One training step, as the trainer runs it; its seconds and the policy's chosen log-probs."""
    modality, policy = arm["modality"], arm["policy"]
    start = time.perf_counter()
    batch = modality.collate(arm["records"])
    draw = modality.draw(batch, 0, policy)
    pol = modality.surrogate(policy, batch, draw, NEEDS)
    with torch.no_grad(), arm["reference"](policy):
        ref = modality.surrogate(policy, batch, draw, NEEDS)
    loss = objectives.get("dpo")(pol, ref, beta=BETA).loss.mean()
    arm["optimizer"].zero_grad()
    loss.backward()
    arm["optimizer"].step()
    return time.perf_counter() - start, pol.chosen.detach()


def compare(data: str, folder: Path, frames: int, repeats: int, steps: int) -> dict:
    """Every arm ``repeats`` times ``steps`` steps, interleaved (a busy neighbour hits all arms
    alike), with the clips encoded per step and the first step's surrogates compared."""
    with TowerCount() as counter:
        arms = {name: build(options, data, folder / f"cache-{name}", frames, counter) for name, options in ARMS.items()}
        first = {name: step(arm)[1] for name, arm in arms.items()}  # warm-up, and the arms agree
        runs = {name: [] for name in arms}
        encoded = {name: 0 for name in arms}
        for _ in range(repeats):
            for name, arm in arms.items():
                before = counter.encoded
                runs[name].append(statistics.median(step(arm)[0] for _ in range(steps)))
                encoded[name] += counter.encoded - before
    median = {name: statistics.median(times) for name, times in runs.items()}
    return {"seconds_per_step": runs, "median": median,
            "clips_encoded_per_step": {name: encoded[name] / (repeats * steps) for name in arms},
            "cached_prepare": arms["cached"]["prepare"],
            "first_step_chosen_logp_max_abs_diff_vs_naive": {
                name: float((first[name] - first["naive"]).abs().max()) for name in arms if name != "naive"},
            **{f"{a}_over_{b}": ratio(runs[a], runs[b]) for a, b in (("packed", "naive"), ("cached", "naive"),
                                                                     ("cached", "packed"))},
            "prompt_tokens": len(arms["naive"]["records"][0]["prompt_ids"]),
            "response_tokens": [len(arms["naive"]["records"][0][k]) for k in ("chosen_ids", "rejected_ids")]}


def ratio(numerator: list[float], denominator: list[float]) -> dict:
    """The ratio of the arms' medians, and the min and max of the per-repetition ratios
    (their spread says how much a busy machine moved the numbers)."""
    each = [a / b for a, b in zip(numerator, denominator)]
    return {"of_medians": round(statistics.median(numerator) / statistics.median(denominator), 3),
            "per_repetition_min_max": [round(min(each), 3), round(max(each), 3)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per repetition (their median is kept)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs (clips) in the batch")
    parser.add_argument("--frames", type=int, default=8, help="frames read per clip (video_frames)")
    parser.add_argument("--size", type=int, default=64, help="clip side in pixels (the tiny budget's most is 64)")
    parser.add_argument("--answer-words", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "vl_video.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # comparable numbers on a shared machine
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_data(folder, args.pairs, args.frames, args.size, args.answer_words)
        compared = compare(data, folder, args.frames, args.repeats, args.steps)
    result = {"model": f"tiny_qwen25_vl {MODEL}, LoRA {LORA} on the language model, reference = adapters off",
              "clips": f"{args.pairs} pairs, one clip each: {args.frames} frames of {args.size} x {args.size} px (MP4)",
              "repeats": args.repeats, "steps": args.steps, "statistic": "median step per repetition",
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "machine": platform.machine(), **compared}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "seconds_per_step"}, indent=2))


if __name__ == "__main__":
    main()
