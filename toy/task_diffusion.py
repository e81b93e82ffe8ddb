"""The ``diffusion_red`` demo: Diffusion-DPO teaches the toy text-to-image model a preference.

The preference, stated: *when the prompt names no colour, draw the shape red.* The base model
(``assets/toy/diffusion``) draws colourless prompts in any of four colours, so about a quarter
to a half of its samples are red. Through :func:`mmalign.toy.task.run`, the demo

1. samples the base model on colourless prompts of the training templates, scores each image
   with the ``toy_colour`` detector reward and keeps the best and the worst image of each
   prompt as a preference pair (on-policy data, as Diffusion-DPO's Pick-a-Pic pairs but judged
   by a program);
2. trains with ``dpo`` on the ``image_diffusion`` modality (Wallace et al. 2023,
   arXiv:2311.12908) through the ordinary trainer;
3. measures the red rate on held-out templates and held-out sampling seeds, before and after.

This module supplies the parts (:class:`mmalign.toy.task.Parts`); :data:`PRESETS` holds the
settings ``mmalign demo`` runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmalign import config
from mmalign.toy import checkpoints, colour_task, shapes

NAME = "diffusion_red"
SCALED = ("pair_prompts", "eval_images")


@dataclass(frozen=True)
class Settings:
    """The demo's knobs. Its beta, learning rate, steps and pair count were chosen on the
    ``tune`` seeds (:data:`mmalign.toy.shapes.SPLITS`), never on the held-out ones it
    reports: ``task.run(task_diffusion, dir, Settings(lr=...), split="tune")`` measures a candidate there.
    ``objective`` may name another pairwise objective of the registry (e.g. ``apo_zero``)."""

    pair_prompts: int = 288         # colourless prompts sampled for preference pairs
    samples_per_prompt: int = 4     # images per prompt; the best and the worst make the pair
    eval_images: int = 240          # held-out images per arm (before / after)
    steps: int = 600
    batch_size: int = 8
    objective: str = "dpo"
    beta: float = 2000.0
    lr: float = 2e-3
    lora_r: int = 16                # LoRA on the attention projections; 0: full fine-tuning
    sample_steps: int = 20
    guidance_scale: float = 4.0
    chunk: int = 48                 # images per sampling call


#: ``full``: the settings above, run by ``mmalign demo --task all``. ``default``, run by
#: ``mmalign demo`` with no flag: half the preference prompts and half the training steps
#: (chosen on the ``tune`` seeds, where it moved the red rate as much as ``full``), the same
#: measurement (240 held-out images per arm, the same sampler).
PRESETS = {"full": Settings(), "default": Settings(pair_prompts=144, steps=300)}


def options(s: Settings) -> dict:
    """The image_diffusion modality's options, for sampling and for the training recipe."""
    return {"resolution": shapes.SIZE, "cache": True, "sample_steps": s.sample_steps,
            "guidance_scale": s.guidance_scale}


def load(s: Settings):
    return colour_task.load("image_diffusion", checkpoints.require(checkpoints.DIFFUSION), options(s))


def recipe(table: Path, n_pairs: int, out: Path, s: Settings, progress: bool) -> config.Recipe:
    return colour_task.recipe(NAME, "image_diffusion", checkpoints.require(checkpoints.DIFFUSION), options(s),
                              table, n_pairs, out, s, progress)


measure = colour_task.measure
make_pairs = colour_task.make_pairs
grid = colour_task.grid
results = colour_task.results
