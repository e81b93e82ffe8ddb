"""Reward scorers of the shapes world, registered in ``mmalign.registry.rewards``.

Programs, not learned models, measure the preference, so the demos' numbers mean exactly
what they say:

* ``toy_colour``: an image scores 1 when its main object has the colour the prompt names,
  or, when the prompt names none, the preferred colour (red by default); plus
  ``shape_weight`` when its shape is the one the prompt names. Same interface as the
  image_diffusion scorers: ``score(images, prompts) -> Tensor [N]``.
* ``toy_caption_objects``: a caption scores the number of objects it names that are in the
  image minus ``penalty`` times the number it names that are not (hallucinations, read by
  the CHAIR object parser). ``score(captions, annotations) -> Tensor [N]``.
* ``toy_yes_no``: an answer to "Is there a ...?" scores 1 when POPE's reading of it (yes
  unless its first sentence says no / not) matches the truth. ``score(answers, truths)``.

:func:`best_vs_worst` makes a preference pair of a prompt's scored samples.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import Tensor

from mmalign import assets
from mmalign.errors import ConfigError
from mmalign.registry import register_reward
from mmalign.toy import detect, shapes

#: the shapes world's object vocabulary for CHAIR / POPE (one class per colour and shape)
VOCABULARY = assets.path("toy/shape_objects.json")


def vocabulary_data() -> dict:
    """The object vocabulary file's content: every ``colour shape`` class, no synonyms."""
    return {"classes": {name: [] for name in shapes.object_names()}, "phrases": {}, "drop_if_present": {}}


def write_vocabulary(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(vocabulary_data(), indent=1) + "\n", encoding="utf-8")
    return path


def image_score(image: Image.Image, prompt: str, prefer: str, shape_weight: float) -> float:
    """``[colour right] + shape_weight * [shape right]`` for one image (0 for an empty one)."""
    found = detect.main_object(image)
    if found is None:
        return 0.0
    words = detect.prompt_words(prompt)
    colour_ok = found.colour == (words["colour"] or prefer)
    shape_ok = words["shape"] is not None and found.shape == words["shape"]
    return float(colour_ok) + shape_weight * float(shape_ok)


@register_reward("toy_colour")
class ColourPreference:
    """The ``diffusion_red`` demo's preference: the named colour, else ``prefer``."""

    def __init__(self, prefer: str = "red", shape_weight: float = 0.5):
        if prefer not in shapes.COLOURS:
            raise ConfigError(f"reward 'toy_colour': prefer must be one of {', '.join(shapes.COLOURS)}, "
                              f"got {prefer!r}")
        self.prefer, self.shape_weight = prefer, float(shape_weight)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> Tensor:
        if len(images) != len(prompts):
            raise ValueError(f"score() needs one prompt per image; got {len(images)} images, {len(prompts)} prompts")
        return torch.tensor([image_score(im, p, self.prefer, self.shape_weight) for im, p in zip(images, prompts)])


@register_reward("toy_caption_objects")
class CaptionObjects:
    """Objects named rightly minus ``penalty`` times objects named wrongly (CHAIR's parser)."""

    def __init__(self, penalty: float = 2.0, vocabulary: str | None = None):
        from mmalign.modalities.vision_language.objects import load_vocabulary

        self.penalty = float(penalty)
        self.vocabulary = load_vocabulary(vocabulary or VOCABULARY)

    def score(self, captions: Sequence[str], annotations: Sequence[Sequence[str]]) -> Tensor:
        if len(captions) != len(annotations):
            raise ValueError(f"score() needs one annotation per caption; got {len(captions)} and {len(annotations)}")
        out = []
        for caption, objects in zip(captions, annotations):
            truth = {self.vocabulary.canonical(o) for o in objects}
            named = self.vocabulary.mentions(caption)
            right = len(set(named) & truth)  # naming an object twice earns it once
            wrong = sum(name not in truth for name in named)
            out.append(right - self.penalty * wrong)
        return torch.tensor(out, dtype=torch.float32)


@register_reward("toy_yes_no")
class YesNoTruth:
    """1 for an answer whose yes / no (POPE's reading) is the truth, else 0."""

    def score(self, answers: Sequence[str], truths: Sequence[bool]) -> Tensor:
        from mmalign.modalities.vision_language.hallucination import says_yes

        if len(answers) != len(truths):
            raise ValueError(f"score() needs one truth per answer; got {len(answers)} and {len(truths)}")
        return torch.tensor([float(says_yes(a) == bool(t)) for a, t in zip(answers, truths)])


def best_vs_worst(scores: Sequence[float]) -> tuple[int, int] | None:
    """``(best, worst)`` indices of one prompt's samples, the first of each on ties; None when
    every sample scores the same (such a prompt says nothing about the preference)."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    return None if scores[best] == scores[worst] else (best, worst)
