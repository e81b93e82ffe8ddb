"""The packed and naive layouts, checked against masks and positions written out by hand."""
from __future__ import annotations

import torch

from mmalign.modalities.tokens.layouts import PAD, naive, pack

# row 0: prompt [10, 11], chosen [20, 21], rejected [30]
# row 1: prompt [12],     chosen [22],     rejected [31, 32]   (one pad at the end)
PROMPTS, CHOSEN, REJECTED = [[10, 11], [12]], [[20, 21], [22]], [[30], [31, 32]]


def test_block_mask_positions_and_targets():
    layout = pack(PROMPTS, CHOSEN, REJECTED, pad_id=0)
    assert layout.input_ids.tolist() == [[10, 11, 20, 21, 30], [12, 22, 31, 32, 0]]
    assert layout.segments[1, 4].item() == PAD
    # positions restart after the prompt: rejected continues from the prompt end, like chosen
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 2, 0]]
    allowed = (layout.attention_mask(torch.float32)[:, 0] == 0).int().tolist()
    # query rows / key columns; P = prompt, C = chosen, R = rejected, pad sees only itself
    assert allowed[0] == [[1, 0, 0, 0, 0],   # P
                          [1, 1, 0, 0, 0],   # P
                          [1, 1, 1, 0, 0],   # C: prompt + itself
                          [1, 1, 1, 1, 0],   # C: prompt + earlier chosen
                          [1, 1, 0, 0, 1]]   # R: prompt, not chosen
    assert allowed[1] == [[1, 0, 0, 0, 0],   # P
                          [1, 1, 0, 0, 0],   # C
                          [1, 0, 1, 0, 0],   # R: prompt + itself
                          [1, 0, 1, 1, 0],   # R: prompt + earlier rejected
                          [0, 0, 0, 0, 1]]   # pad
    # the first token of both responses is predicted by the last prompt token; entries past a
    # response (masked) run on into the row: row 1's chosen u=1 -> 1, row 0's rejected u=1 -> 3
    assert layout.chosen.positions.tolist() == [[1, 2], [0, 1]]
    assert layout.chosen.targets.tolist() == [[20, 21], [22, 0]]
    assert layout.chosen.mask.tolist() == [[True, True], [True, False]]
    assert layout.rejected.positions.tolist() == [[1, 3], [0, 2]]
    assert layout.rejected.targets.tolist() == [[30, 0], [31, 32]]
    assert layout.rejected.mask.tolist() == [[True, False], [True, True]]


def test_masked_entries_are_the_dtype_minimum():
    mask = pack(PROMPTS, CHOSEN, REJECTED, pad_id=0).attention_mask(torch.bfloat16)
    assert mask.shape == (2, 1, 5, 5) and mask.dtype == torch.bfloat16
    assert set(mask.unique().tolist()) == {0.0, torch.finfo(torch.bfloat16).min}


def test_naive_layout_writes_each_prompt_twice():
    layout = naive(PROMPTS, CHOSEN, REJECTED, pad_id=0)
    assert layout.input_ids.tolist() == [[10, 11, 20, 21], [12, 22, 0, 0], [10, 11, 30, 0], [12, 31, 32, 0]]
    assert layout.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    # row 1 (prompt [12], chosen [22]) and row 2 (prompt [10, 11], rejected [30]) have a masked
    # entry u=1, pointing at min(p + 1, L - 1) - 1 = 1 and 2
    assert layout.targets.positions.tolist() == [[1, 2], [0, 1], [1, 2], [0, 1]]
    assert layout.targets.mask.tolist() == [[True, True], [True, False], [True, False], [True, True]]
