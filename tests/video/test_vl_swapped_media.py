"""mDPO's conditional term on Qwen2.5-VL: the chosen answer under another clip (the row's
``rejected_video``, ms-swift's ``rejected_videos``) or under a corrupted image. Under a pixel
budget the swapped medium is brought to the original's size, so it becomes as many tokens as
the prompt holds for it; the term then equals a plain forward on the swapped medium."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign.objectives.conditional import CORRUPTED  # noqa: E402

from tests.video.clip_rows import tiny_modality, write_image_rows, write_video_rows  # noqa: E402

NEEDS = frozenset({"token_logps", f"terms:{CORRUPTED}"})


def _term(modality, policy, records, seed=0, needs=NEEDS):
    batch = modality.collate(records)
    with torch.no_grad():
        out = modality.surrogate(policy, batch, modality.draw(batch, seed), needs)
    return out, batch


def test_rejected_video_term_is_the_chosen_answer_under_the_other_clip(tmp_path):
    modality, policy = tiny_modality("tiny_qwen25_vl")
    records = modality.load_records(write_video_rows(tmp_path, 4), "vision_language:video_qa")
    out, _ = _term(modality, policy, records)
    # row k's rejected clip is row k+1's clip: the same answer scored on that clip, directly
    swapped = [{**r, "videos": [r["rejected_video"]]} for r in records]
    for r in swapped:
        r.pop("rejected_video")
    direct, _ = _term(modality, policy, swapped, needs=frozenset({"token_logps"}))
    torch.testing.assert_close(out.terms[CORRUPTED], direct.chosen, atol=1e-5, rtol=0)
    assert not torch.allclose(out.terms[CORRUPTED], out.chosen)


def test_corrupted_image_under_a_pixel_budget_keeps_the_token_count(tmp_path):
    modality, policy = tiny_modality("tiny_qwen25_vl")
    records = modality.load_records(write_image_rows(tmp_path), "vision_language:rlaif_v")
    out, batch = _term(modality, policy, records)
    assert torch.isfinite(out.terms[CORRUPTED]).all() and not torch.allclose(out.terms[CORRUPTED], out.chosen)
    again, _ = _term(modality, policy, records)  # the corruption is drawn per row from the seed
    torch.testing.assert_close(again.terms[CORRUPTED], out.terms[CORRUPTED], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["shuffle", "drop", "reverse"])
def test_mdpo_on_video_scores_the_chosen_answer_under_the_perturbed_clip(kind, tmp_path):
    """With no rejected_video, the corrupted condition is the row's own clip perturbed
    (``video_corruption``), drawn from the row's corruption seed."""
    from mmalign.modalities.vision_language.clip_perturb import perturb
    from mmalign.modalities.vision_language.media import open_media

    modality, policy = tiny_modality("tiny_qwen25_vl", video_corruption=kind)
    records = modality.load_records(write_video_rows(tmp_path, 2), "vision_language:video_qa")
    for r in records:
        r.pop("rejected_video")
    out, batch = _term(modality, policy, records)
    seeds = modality.draw(batch, 0)["corruption_seed"]
    perturbed = []
    for r, seed in zip(records, seeds):
        clip = open_media(r, modality.options.sampling).clips[0]
        frames = perturb(clip.frames, kind, torch.Generator().manual_seed(seed))
        assert not torch.equal(frames, clip.frames)
        perturbed.append({**r, "videos": [clip._replace(frames=frames)]})
    direct, _ = _term(modality, policy, perturbed, needs=frozenset({"token_logps"}))
    torch.testing.assert_close(out.terms[CORRUPTED], direct.chosen, atol=1e-5, rtol=0)
