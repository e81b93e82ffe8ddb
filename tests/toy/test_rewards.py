"""Program rewards: the colour preference, the caption object count, and pair picking."""
from __future__ import annotations

import json

import torch

from mmalign import registry
from mmalign.toy import rewards, shapes


def image(shape: str, colour: str):
    return shapes.render([shapes.Shape(shape, colour, "large", (8, 8, 24, 24))])


def test_colour_preference_scores_by_hand():
    """score = [colour right] + 0.5 [shape right]; the right colour is the named one, or red
    when the prompt names none."""
    scorer = registry.rewards.get("toy_colour")()
    images = [image("circle", "red"), image("circle", "blue"), image("square", "blue"), image("square", "red")]
    prompts = ["a circle", "a circle", "a blue circle", "a blue square"]
    expected = torch.tensor([1.0 + 0.5, 0.0 + 0.5, 1.0 + 0.0, 0.0 + 0.5])
    torch.testing.assert_close(scorer.score(images, prompts), expected, rtol=0, atol=0)


def test_colour_preference_other_colour_and_blank_image():
    from PIL import Image

    scorer = rewards.ColourPreference(prefer="green", shape_weight=0.0)
    got = scorer.score([image("triangle", "green"), Image.new("RGB", (32, 32), "white")], ["a triangle"] * 2)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0]), rtol=0, atol=0)


def test_caption_objects_counts_right_and_wrong_mentions():
    """Truth {red circle}: caption 1 names it (+1) and an absent blue square (-2) -> -1;
    caption 2 names it twice (+1, counted once) -> 1; caption 3 names nothing -> 0."""
    scorer = registry.rewards.get("toy_caption_objects")()
    captions = ["a red circle and a blue square .", "a red circle and a red circle .", "a picture ."]
    got = scorer.score(captions, [["red circle"]] * 3)
    torch.testing.assert_close(got, torch.tensor([-1.0, 1.0, 0.0]), rtol=0, atol=0)


def test_best_vs_worst():
    assert rewards.best_vs_worst([0.0, 1.5, 1.5, -1.0]) == (1, 3)
    assert rewards.best_vs_worst([0.5, 0.5]) is None


def test_shipped_vocabulary_is_the_worlds():
    assert json.loads(rewards.VOCABULARY.read_text()) == rewards.vocabulary_data()
