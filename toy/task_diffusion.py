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

from PIL import Image

from mmalign import config
from mmalign.modalities.image_diffusion.sampling import save_grid
from mmalign.modality import ModelSpec
from mmalign.registry import modalities
from mmalign.toy import checkpoints, detect, shapes, task
from mmalign.toy.pretrain_diffusion import HELDOUT_TEMPLATES, TRAIN_TEMPLATES
from mmalign.toy.rewards import ColourPreference, best_vs_worst

NAME = "diffusion_red"
SCALED = ("pair_prompts", "eval_images")
PREFERRED = "red"


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


def colourless_prompts(templates: tuple[str, ...], count: int, offset: int = 0) -> list[str]:
    """``count`` prompts naming a shape (and a size or not) but no colour, cycling through
    every shape, size wording and template."""
    subjects = [" ".join(w for w in (size, shape) if w) for shape in shapes.SHAPES for size in ("", *shapes.SIDES)]
    every = [t.format(s) for t in templates for s in subjects]
    return [every[(offset + i) % len(every)] for i in range(count)]


def red_rate(images: list[Image.Image]) -> float:
    """Share of images whose main object the detector reads as red."""
    found = [detect.main_object(im) for im in images]
    return sum(d is not None and d.colour == PREFERRED for d in found) / max(len(images), 1)


def load(s: Settings):
    modality = modalities.get("image_diffusion")(resolution=shapes.SIZE, sample_steps=s.sample_steps,
                                                 guidance_scale=s.guidance_scale)
    return modality, modality.load_policy(ModelSpec(path=checkpoints.require(checkpoints.DIFFUSION)))


def measure(modality, model, out: Path, split: str, s: Settings, progress: bool, arm: str) -> list[Image.Image]:
    """One image of each held-out prompt, image ``i`` from seed ``i`` of ``split``."""
    prompts = colourless_prompts(HELDOUT_TEMPLATES, s.eval_images)
    seeds = [shapes.seed_of(split, i) for i in range(len(prompts))]
    groups = task.sample_all(modality, model, prompts, 1, seeds, s.chunk, f"{NAME}: {arm} samples", progress)
    return [group[0] for group in groups]


def make_pairs(modality, model, out: Path, s: Settings, progress: bool) -> list[dict]:
    """Sample, score, keep best vs worst per prompt (``image_pairs`` rows, image paths relative
    to ``out``)."""
    prompts = colourless_prompts(TRAIN_TEMPLATES, s.pair_prompts)
    seeds = [shapes.seed_of("prefs", i) for i in range(len(prompts))]
    groups = task.sample_all(modality, model, prompts, s.samples_per_prompt, seeds, s.chunk,
                             f"{NAME}: preference pairs", progress)
    scorer = ColourPreference(prefer=PREFERRED)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    rows = []
    for p, (prompt, group) in enumerate(zip(prompts, groups)):
        picked = best_vs_worst(scorer.score(group, [prompt] * len(group)).tolist())
        if picked is None:
            continue
        names = [f"pairs/{p:04d}_{side}.png" for side in ("w", "l")]
        for name, index in zip(names, picked):
            group[index].save(out / name)
        rows.append({"prompt": prompt, "chosen": names[0], "rejected": names[1]})
    return rows


def recipe(table: Path, n_pairs: int, out: Path, s: Settings, progress: bool) -> config.Recipe:
    lora = {"r": s.lora_r, "alpha": s.lora_r} if s.lora_r else None
    model = {"modality": "image_diffusion", "path": checkpoints.require(checkpoints.DIFFUSION), "lora": lora,
             "options": {"resolution": shapes.SIZE, "cache": True, "sample_steps": s.sample_steps,
                         "guidance_scale": s.guidance_scale}}
    return task.recipe(NAME, model, {"train": str(table), "schema": "image_pairs"},
                       {"name": s.objective, "params": {"beta": s.beta}}, s, n_pairs, out, progress)


def grid(out: Path, split: str, images: list[Image.Image], path: Path) -> None:
    save_grid(images[:64], str(path), columns=8)


def results(before: list[Image.Image], after: list[Image.Image], common: dict) -> dict:
    return dict(common, metric=f"{PREFERRED} rate on colourless prompts", before=red_rate(before),
                after=red_rate(after), higher_is_better=True, samples=len(after))

