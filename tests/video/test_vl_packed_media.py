"""The packed ``[prompt | chosen | rejected]`` forward equals the naive two-sequence forward of
the model's own backbone, in values and in gradients, for Qwen2.5-VL on images (of different
sizes, so different grids) and on clips, and for LLaVA-NeXT-Video on clips and on images
(any-resolution tiles with row-newline tokens).

Qwen2.5-VL's 3-D RoPE positions cannot be restarted after the prompt the way 1-D ones are (a
clip's temporal positions jump ahead of the text), so the packed row takes each token's
positions from the model's own ``get_rope_index`` on the naive rows
(:func:`mmalign.modalities.tokens.layouts.packed_positions`); the block mask is unchanged.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign.surrogate import Draw  # noqa: E402

from tests.video.clip_rows import tiny_modality, write_image_rows, write_video_rows  # noqa: E402

CASES = {"qwen25_vl-images": ("tiny_qwen25_vl", write_image_rows, "vision_language:rlaif_v"),
         "qwen25_vl-clips": ("tiny_qwen25_vl", write_video_rows, "vision_language:video_qa"),
         "llava_next_video-clips": ("tiny_llava_next_video", write_video_rows, "vision_language:video_qa"),
         "llava_next_video-images": ("tiny_llava_next_video", write_image_rows, "vision_language:rlaif_v")}


def _surrogate_and_grads(modality, policy, batch):
    policy.zero_grad()
    out = modality.surrogate(policy, batch, Draw({}), frozenset({"token_logps"}))
    (out.chosen.sum() - 0.5 * out.rejected.sum()).backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_equals_naive_in_values_and_gradients(case, tmp_path):
    builder, write, schema = CASES[case]
    modality, policy = tiny_modality(builder)
    records = modality.load_records(write(tmp_path), schema)
    batch = modality.collate(records)
    media = batch.inputs["media"]
    if "image_grid_thw" in media:  # the images really have different grids
        assert len({tuple(g) for g in media["image_grid_thw"].tolist()}) > 1
    modality.packed = True
    packed, packed_grads = _surrogate_and_grads(modality, policy, batch)
    modality.packed = False
    naive, naive_grads = _surrogate_and_grads(modality, policy, modality.collate(records))
    torch.testing.assert_close(packed.chosen, naive.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.rejected, naive.rejected, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.chosen_units, naive.chosen_units, atol=1e-5, rtol=0)
    assert packed_grads.keys() == naive_grads.keys() and len(packed_grads) > 0
    vision = [n for n in packed_grads if "visual" in n or "vision_tower" in n]
    assert vision, "the gradient reaches the vision tower"
    for name in packed_grads:
        torch.testing.assert_close(packed_grads[name], naive_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_qwen_packed_positions_are_the_naive_rows_own(tmp_path):
    """The positions the packed rows use are, token by token, those the model gives each
    naive sequence; a clip's temporal positions jump past the text, as Qwen2.5-VL's do."""
    from mmalign.modalities.tokens.layouts import naive, pack, packed_positions
    from mmalign.modalities.vision_language.vision import rope_positions

    modality, policy = tiny_modality("tiny_qwen25_vl")
    # 8 frames at 2 fps, 4 read: a temporal patch (2 frames) spans over a second, several time positions
    batch = modality.collate(modality.load_records(write_video_rows(tmp_path, fps=2), "vision_language:video_qa"))
    ids = [batch.inputs[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")]
    flat = naive(*ids, batch.inputs["pad_id"])
    twice = {k: torch.cat([v, v]) for k, v in batch.inputs["media"].items()}
    naive_positions = rope_positions(policy, flat, twice)
    assert naive_positions.shape[0] == 3
    video = flat.input_ids[0] == policy.config.video_token_id
    assert naive_positions[0, 0][video].max() > naive_positions[1, 0][video].max()  # time ran ahead
    layout = pack(*ids, batch.inputs["pad_id"])
    packed = packed_positions(layout, naive_positions)
    rows = len(ids[0])
    for b in range(rows):
        n_prompt, n_chosen, n_rejected = (len(ids[k][b]) for k in range(3))
        assert torch.equal(packed[:, b, :n_prompt + n_chosen], naive_positions[:, b, :n_prompt + n_chosen])
        assert torch.equal(packed[:, b, n_prompt + n_chosen:n_prompt + n_chosen + n_rejected],
                           naive_positions[:, rows + b, n_prompt:n_prompt + n_rejected])
