"""The ``video_temporal`` task: DPO against a planted direction prior on the toy video-language model.

The base model (``assets/toy/qwen_video``, :mod:`mmalign.toy.pretrain_qwen_video`) learned from
texts that often say an object's favoured direction when it moves another way, so decoding
greedily it answers the favoured direction on held-out clips moving against it. Through
:func:`mmalign.toy.task.run`, this task

1. measures direction-question accuracy (all objects, those moving against / with the prior),
   caption object accuracy and answer lengths on held-out clips;
2. builds preference pairs on ``prefs`` clips from their annotations: for each object, the true
   direction (chosen) against the direction the prior suggests (the favoured one for an object
   moving against it, else a random wrong one); and for each clip, the true caption against
   the caption with every object moved the favoured way (same words, same length);
3. trains ``dpo`` plus RPO's NLL on the chosen response, LoRA on the language model, through the
   ordinary trainer on the vision_language modality (``video_qa`` rows);
4. measures again, with the same clips.

This module supplies the parts (:class:`mmalign.toy.task.Parts`). It is not yet one of
``mmalign demo``'s tasks (its caption guard is not yet stable from run to run);
``python -m mmalign.toy.task_video OUT [split]`` runs it.

:class:`Settings` were chosen on 200 ``tune`` clips (never on held-out ones), comparing
learning rate, steps, beta, the prior share of the pair clips, the NLL weight and the caption
pairs. Two findings shaped them: with ``beta`` 0.1 and 120 steps DPO hardly moved the answers;
and without the caption pairs, direction pairs alone shrank the captions (caption object
accuracy 0.72 -> 0.21, 8.1 -> 5.7 words): the guards catch that shortcut.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmalign import config
from mmalign.modality import ModelSpec
from mmalign.registry import modalities
from mmalign.toy import checkpoints, shapes, shapes_video as sv, task
from mmalign.toy.pretrain_qwen_video import CAPTION_PROMPT, measure as measure_clips, write_clips

NAME = "video_temporal"
SCALED = ("pair_clips", "eval_clips")
QWEN_VIDEO = checkpoints.ROOT / "qwen_video"


@dataclass(frozen=True)
class Settings:
    """The task's knobs, chosen on the ``tune`` seeds only (module docstring)."""

    pair_clips: int = 1024
    pair_prior_share: float = 0.35  # prefs clips moving their favoured way (held-out: 0.25)
    eval_clips: int = 240
    caption_pairs: bool = True
    steps: int = 800
    batch_size: int = 8
    beta: float = 0.5
    lr: float = 2e-3
    lora_r: int = 8
    sft_weight: float = 2.0
    max_new_tokens: int = 24
    frames: int = sv.FRAMES


PRESETS = {"full": Settings(), "default": Settings()}


def load(s: Settings):
    modality = modalities.get("vision_language")(max_new_tokens=s.max_new_tokens, video_frames=s.frames)
    return modality, modality.load_policy(ModelSpec(path=checkpoints.require(QWEN_VIDEO)))


def measure(modality, model, out: Path, split: str, s: Settings, progress: bool, arm: str) -> dict:
    return measure_clips(modality, model, write_clips(out, split, s.eval_clips, s.frames))


def make_pairs(modality, model, out: Path, s: Settings, progress: bool) -> list[dict]:
    """``video_qa`` rows on ``prefs`` clips from their annotations (module docstring, step 2)."""
    rows = []
    for clip in write_clips(out, "prefs", s.pair_clips, s.frames, prior_share=s.pair_prior_share):
        scene, video = clip["scene"], str(Path(clip["video"]).relative_to(out))
        rng = random.Random(shapes.seed_of("prefs", clip["index"]))
        for mover in scene.objects:
            wrong = mover.prior if sv.against_prior(mover) else rng.choice(
                [d for d in sv.DIRECTIONS if d != mover.direction])
            rows.append({"video": video, "question": sv.direction_question(mover), "chosen": mover.direction,
                         "rejected": wrong})
        if s.caption_pairs and any(sv.against_prior(m) for m in scene.objects):
            rows.append({"video": video, "question": CAPTION_PROMPT, "chosen": sv.caption(scene),
                         "rejected": sv.caption(scene, [m.prior for m in scene.objects])})
    return rows


def recipe(table: Path, n_pairs: int, out: Path, s: Settings, progress: bool) -> config.Recipe:
    model = {"modality": "vision_language", "path": checkpoints.require(QWEN_VIDEO),
             "lora": {"r": s.lora_r, "alpha": 2 * s.lora_r},
             "options": {"max_length": 128, "max_new_tokens": s.max_new_tokens, "video_frames": s.frames}}
    return task.recipe(NAME, model, {"train": str(table), "schema": "video_qa"}, objective(s), s, n_pairs, out,
                       progress)


def objective(s: Settings) -> list[dict]:
    terms = [{"name": "dpo", "weight": 1.0, "params": {"beta": s.beta}}]
    if s.sft_weight:
        terms.append({"name": "sft", "weight": s.sft_weight, "params": {}})
    return terms


def grid(out: Path, split: str, measured: dict, path: Path, count: int = 6) -> None:
    """The first frame, middle frame and last frame of the first ``count`` clips, with captions."""
    from mmalign.modalities.video_io import read_clip

    scale, cell_w, cell_h = 2, 3 * sv.SIZE * 2 + 16, sv.SIZE * 2 + 40
    canvas = Image.new("RGB", (cell_w * 2, cell_h * -(-count // 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, caption in enumerate(measured["examples"]["captions"][:count]):
        frames = read_clip(out / split / f"{i:05d}.mp4", num_frames=measured.get("frames", sv.FRAMES)).frames.numpy()
        x, y = (i % 2) * cell_w, (i // 2) * cell_h
        for k, t in enumerate((0, len(frames) // 2, len(frames) - 1)):
            tile = Image.fromarray(np.ascontiguousarray(frames[t])).resize((sv.SIZE * scale,) * 2, Image.NEAREST)
            canvas.paste(tile, (x + 4 + k * (sv.SIZE * scale + 2), y + 4))
        draw.text((x + 4, y + 8 + sv.SIZE * scale), caption[:40], fill="black")
    canvas.save(path)


def results(before: dict, after: dict, common: dict) -> list[dict]:
    """Direction accuracy (all, against / with the prior), how often the prior is said, caption
    object and direction accuracy, and mean answer and caption lengths (words; the guards
    against shortcuts: they should not fall)."""
    common = dict(common, samples=before["clips"])
    better = {"direction_accuracy": True, "against_prior_accuracy": True, "with_prior_accuracy": True,
              "against_prior_says_prior": False, "caption_object_accuracy": True,
              "caption_direction_accuracy": True, "answer_words": True, "caption_words": True}
    out = []
    for metric, higher in better.items():
        row = dict(common, metric=metric, before=before[metric], after=after[metric], higher_is_better=higher)
        for arm, measured in (("before", before), ("after", after)):
            if f"{metric}_ci95" in measured:
                row[f"{arm}_ci95"] = measured[f"{metric}_ci95"]
        out.append(row)
    out[0]["change_ci95"] = paired_change_ci(before["direction_correct"], after["direction_correct"])
    return out


def paired_change_ci(before: list, after: list, draws: int = 4000, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the change in direction accuracy: clips resampled
    (with all their questions, the same ones before and after), as the questions of one clip
    are not independent. ``before`` / ``after``: :func:`measure`'s ``(clip, right)`` pairs."""
    if not before or [c for c, _ in before] != [c for c, _ in after]:
        return [float("nan"), float("nan")]
    clips = sorted({c for c, _ in before})
    index = {c: i for i, c in enumerate(clips)}
    right = np.zeros((2, len(clips)))
    asked = np.zeros(len(clips))
    for (c, b), (_, a) in zip(before, after):
        right[0, index[c]] += b
        right[1, index[c]] += a
        asked[index[c]] += 1
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(clips), (draws, len(clips)))
    total = asked[picks].sum(1)
    changes = (right[1][picks].sum(1) - right[0][picks].sum(1)) / total
    return [round(float(np.quantile(changes, 0.025)), 4), round(float(np.quantile(changes, 0.975)), 4)]


def summary(before: dict, after: dict) -> dict:
    """The measurements side by side, without their example texts, for a JSON report."""
    strip = lambda m: {k: v for k, v in m.items() if k not in ("examples", "direction_correct")}  # noqa: E731
    return {"before": strip(before), "after": strip(after)}


if __name__ == "__main__":  # a measurement outside ``mmalign demo``: python -m mmalign.toy.task_video OUT [split]
    import sys

    import torch

    torch.set_num_threads(1)
    run_dir, split = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "heldout")
    print(json.dumps(task.run(sys.modules[__name__], run_dir, Settings(), split=split), indent=1))
