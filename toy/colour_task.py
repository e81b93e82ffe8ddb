"""The colour preference the text-to-image demos share, whatever model draws the images.

*When the prompt names no colour, draw the shape red*: ``diffusion_red``
(:mod:`~mmalign.toy.task_diffusion`, a UNet) and ``flow_red`` (:mod:`~mmalign.toy.task_flow`,
a rectified-flow transformer) teach it to toy models of the same world, trained on the same
captions. Everything that does not depend on the model lives here: the colourless prompts, the
red rate, sampling and measuring through the modality's ``sample`` hook, pairing scored
samples, the grids and the result dict: ``measure``, ``make_pairs``, ``grid`` and ``results``
are :class:`~mmalign.toy.task.Parts` as they stand, ``load`` and ``recipe`` take the model's
modality, path and options. A task's ``Settings`` have the fields ``eval_images``, ``pair_prompts``, ``samples_per_prompt``,
``chunk``, ``objective``, ``beta``, ``lora_r`` and the optimisation knobs :func:`mmalign.toy.task.recipe` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from torch import nn

from mmalign import config
from mmalign.modalities.image_diffusion.sampling import save_grid
from mmalign.modality import ModelSpec
from mmalign.registry import modalities
from mmalign.toy import detect, shapes, task
from mmalign.toy.pretrain_diffusion import HELDOUT_TEMPLATES, TRAIN_TEMPLATES
from mmalign.toy.rewards import ColourPreference, best_vs_worst

PREFERRED = "red"


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


def load(modality_name: str, path: str, options: dict) -> tuple[Any, nn.Module]:
    """The modality ``modality_name`` with ``options`` and the base policy at ``path``."""
    modality = modalities.get(modality_name)(**options)
    return modality, modality.load_policy(ModelSpec(path=path))


def recipe(name: str, modality_name: str, path: str, options: dict, table: Path, n_pairs: int, out: Path, s: Any,
           progress: bool) -> config.Recipe:
    """DPO (or ``s.objective``) on the pairs, LoRA of rank ``s.lora_r`` (0: full fine-tuning)."""
    lora = {"r": s.lora_r, "alpha": s.lora_r} if s.lora_r else None
    model = {"modality": modality_name, "path": path, "lora": lora, "options": options}
    return task.recipe(name, model, {"train": str(table), "schema": "image_pairs"},
                       {"name": s.objective, "params": {"beta": s.beta}}, s, n_pairs, out, progress)


def measure(modality: Any, model: nn.Module, out: Path, split: str, s: Any, progress: bool,
            arm: str) -> list[Image.Image]:
    """One image of each held-out-template prompt, image ``i`` from seed ``i`` of ``split``
    (``out`` is the task's folder, named after it: the progress bar says which task)."""
    prompts = colourless_prompts(HELDOUT_TEMPLATES, s.eval_images)
    seeds = [shapes.seed_of(split, i) for i in range(len(prompts))]
    groups = task.sample_all(modality, model, prompts, 1, seeds, s.chunk, f"{out.name}: {arm} samples", progress)
    return [group[0] for group in groups]


def make_pairs(modality: Any, model: nn.Module, out: Path, s: Any, progress: bool) -> list[dict]:
    """Sample the training-template prompts on the ``prefs`` seeds, score each image with the
    ``toy_colour`` reward, keep best vs worst per prompt (``image_pairs`` rows, image paths
    relative to ``out``)."""
    prompts = colourless_prompts(TRAIN_TEMPLATES, s.pair_prompts)
    seeds = [shapes.seed_of("prefs", i) for i in range(len(prompts))]
    groups = task.sample_all(modality, model, prompts, s.samples_per_prompt, seeds, s.chunk,
                             f"{out.name}: preference pairs", progress)
    scorer = ColourPreference(prefer=PREFERRED)
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    rows = []
    for p, (prompt, group) in enumerate(zip(prompts, groups)):
        picked = best_vs_worst(scorer.score(group, [prompt] * len(group)).tolist())
        if picked is None:
            continue
        names = [f"pairs/{p:04d}_{side}.png" for side in ("w", "l")]
        for path, index in zip(names, picked):
            group[index].save(out / path)
        rows.append({"prompt": prompt, "chosen": names[0], "rejected": names[1]})
    return rows


def grid(out: Path, split: str, images: list[Image.Image], path: Path) -> None:
    """The first 64 measured images, eight to a row."""
    save_grid(images[:64], str(path), columns=8)


def results(before: list[Image.Image], after: list[Image.Image], common: dict) -> dict:
    """The red rate before and after, and how many images each arm measured."""
    return dict(common, metric=f"{PREFERRED} rate on colourless prompts", before=red_rate(before),
                after=red_rate(after), higher_is_better=True, samples=len(after))
