"""``cache_vision_features`` on clips and on pixel-budget images: each row's features (and the
grids its 3-D RoPE positions come from) are computed once in ``prepare``; the packed
surrogate then reads them, runs no vision tower and decodes no clip, and equals the live one."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign.modalities.vision_language import media as media_module  # noqa: E402
from mmalign.modalities.vision_language import vision  # noqa: E402

from tests.video.clip_rows import tiny_modality, write_image_rows, write_video_rows  # noqa: E402

CASES = {"clips": (write_video_rows, "vision_language:video_qa"),
         "images": (write_image_rows, "vision_language:rlaif_v")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cached_features_give_the_live_surrogate_without_the_tower(case, tmp_path, monkeypatch):
    write, schema = CASES[case]
    modality, policy = tiny_modality("tiny_qwen25_vl", cache_vision_features=True)
    policy.requires_grad_(False)  # the vision side is frozen: the cache is allowed
    records = modality.load_records(write(tmp_path / "data"), schema)
    live_batch = modality.collate(records)
    with torch.no_grad():
        live = modality.surrogate(policy, live_batch, modality.draw(live_batch, 0), frozenset({"token_logps"}))
    cached = modality.prepare(records, str(tmp_path / "cache"))
    assert all("media_features" in r for r in cached)

    calls, reads = [], []
    real_features, real_read = vision.media_features, media_module.read_clip
    monkeypatch.setattr(vision, "media_features", lambda *a, **k: calls.append(1) or real_features(*a, **k))
    monkeypatch.setattr(media_module, "read_clip", lambda *a, **k: reads.append(1) or real_read(*a, **k))
    batch = modality.collate(cached)
    with torch.no_grad():
        out = modality.surrogate(policy, batch, modality.draw(batch, 0), frozenset({"token_logps"}))
    assert calls == [] and reads == []
    torch.testing.assert_close(out.chosen, live.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.rejected, live.rejected, atol=1e-5, rtol=0)
