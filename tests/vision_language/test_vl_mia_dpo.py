"""MIA-DPO: the attention share by hand, the three layouts and their target tokens, and the
attention-filtered pairs on the tiny LLaVA."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from vl_helpers import COLOURS, colour_image, tiny_modality, write_colour_set

from mmalign.data.io import RowRef
from mmalign.errors import ConfigError
from mmalign.modalities.vision_language.augment import mia_dpo
from mmalign.modalities.vision_language.augment.layouts import FULL, Layout, grid, pic_in_pic, sequence
from mmalign.modalities.vision_language.augment.mia_dpo import answer_share, attention_share, target_tokens
from mmalign.modalities.vision_language.encoding import to_messages


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    modality, policy = tiny_modality()
    records = modality.load_records(write_colour_set(tmp_path_factory.mktemp("mia")), "rlaif_v")[::3]
    return modality, policy, records


def test_attention_share_by_hand():
    """Keys 0, 1 are image tokens (0 the target), 2, 3 text; queries 2 and 3.
    Layer 1: q2 -> (.5, .25, .25, 0), q3 -> (.1, .3, .2, .4): to target (.5 + .1) / 2 = .3,
    to images (.75 + .4) / 2 = .575. Layer 2 uniform .25: .25 and .5.
    share = mean(.3, .25) / mean(.575, .5) = .275 / .5375."""
    layer1 = torch.zeros(1, 1, 4, 4)
    layer1[0, 0, 2] = torch.tensor([0.5, 0.25, 0.25, 0.0])
    layer1[0, 0, 3] = torch.tensor([0.1, 0.3, 0.2, 0.4])
    layer2 = torch.full((1, 1, 4, 4), 0.25)
    share = attention_share([layer1, layer2], torch.tensor([2, 3]), torch.tensor([0]), torch.tensor([0, 1]))
    assert share == pytest.approx(0.275 / 0.5375, abs=1e-6)


def pixel(image, x: float, y: float):
    return image.getpixel((int(x * image.width), int(y * image.height)))


def test_grid_puts_the_target_in_its_cell():
    """Three images on a 2 x 2 grid of 32-pixel cells: the target box's centre shows the target's
    colour, the other filled cells the distractors'; the prompt names the target's number."""
    layout = grid(colour_image("red"), [colour_image("blue"), colour_image("green")], "q ?",
                  torch.Generator().manual_seed(3), size=64)
    left, top, right, bottom = layout.target_box
    assert right - left == 0.5 and bottom - top == 0.5
    assert pixel(layout.images[0], (left + right) / 2, (top + bottom) / 2) == COLOURS["red"]
    k = round(top * 2) * 2 + round(left * 2)
    assert f"about picture {k + 1} :" in layout.prompt
    cells = [pixel(layout.images[0], (c % 2 + 0.5) / 2, (c // 2 + 0.5) / 2) for c in range(3)]
    assert sorted(cells) == sorted([COLOURS["red"], COLOURS["blue"], COLOURS["green"]])


def test_pic_in_pic_and_sequence():
    inner = pic_in_pic(colour_image("red"), colour_image("blue"), "q ?", torch.Generator().manual_seed(1),
                       size=64, inset=0.5)
    left, top, right, bottom = inner.target_box
    assert pixel(inner.images[0], (left + right) / 2, (top + bottom) / 2) == COLOURS["red"]
    outside = (0.02 if left >= 0.25 else 0.98, 0.02 if top >= 0.25 else 0.98)
    assert pixel(inner.images[0], *outside) == COLOURS["blue"]
    row = sequence(colour_image("red"), [colour_image("blue"), colour_image("green")], "q ?",
                   torch.Generator().manual_seed(2))
    assert row.images[row.target_image].getpixel((0, 0)) == COLOURS["red"] and row.target_box == FULL
    assert row.prompt.count("<image>") == 3 and f"about image {row.target_image + 1} :" in row.prompt


def test_target_tokens_follow_the_patch_grid():
    """Two images of 16 tokens (4 x 4 patches): the sequence target is the whole second block;
    a box over the top-right quarter of one image holds patches 2, 3, 6, 7."""
    ids = torch.tensor([1] + [9] * 32 + [5])
    two = Layout("sequence", [None, None], "", 1, FULL)
    target, images = target_tokens(ids, 9, two)
    assert target.tolist() == list(range(17, 33)) and images.tolist() == list(range(1, 33))
    quarter = Layout("grid", [None], "", 0, (0.5, 0.0, 1.0, 0.5))
    target, _ = target_tokens(torch.tensor([1] + [9] * 16), 9, quarter)
    assert target.tolist() == [1 + i for i in (2, 3, 6, 7)]


def test_sequence_shares_sum_to_one(setup):
    """The share of each image in turn, for the same answer, adds up to 1: the target tokens
    of the n layouts partition the image tokens."""
    modality, policy, records = setup
    layout = sequence(colour_image("red"), [colour_image("blue"), colour_image("green")], "what color ?",
                      torch.Generator().manual_seed(0))
    messages = to_messages(layout.prompt, 3, RowRef("x", 0))
    shares = [answer_share(policy, modality.processor, messages, dataclasses.replace(layout, target_image=k),
                           "a red dog .", "cpu") for k in range(3)]
    assert sum(s for s, _ in shares) == pytest.approx(1.0, abs=1e-5)
    assert all(even == pytest.approx(1 / 3) for _, even in shares)


def test_mia_dpo_pairs_are_filtered_by_attention(setup):
    """threshold 0 keeps nothing (a share is never below 0); a huge threshold keeps every
    answer, one pair per record and layout, each with its layout's images and prompt, and the
    model goes back to SDPA attention."""
    modality, policy, records = setup
    assert mia_dpo(modality, policy, records, threshold=0.0, canvas=64) == []
    pairs = mia_dpo(modality, policy, records, threshold=1e9, canvas=64)
    assert len(pairs) == 3 * len(records)
    for pair in pairs:
        layout = pair["augment"]["layout"]
        assert pair["sample_id"].endswith(f"/mia_dpo/{layout}")
        assert len(pair["images"]) == (3 if layout == "sequence" else 1)
        assert 0.0 <= pair["augment"]["share"] <= 1.0
    assert policy.config._attn_implementation == "sdpa"
    batch = modality.collate(pairs)
    assert len(batch) == len(pairs) and batch.inputs["media"]["pixel_values"].shape[0] == 3 * len(records) + 2 * len(records)
    with pytest.raises(ConfigError, match="layouts"):
        mia_dpo(modality, policy, records, layouts=["mosaic"])
