"""``pixel_budget`` bounds the pixels (hence tokens) a pixel-budget processor gives an image or
frame, and ``stats`` reports the tokens per image and per clip a recipe's data becomes."""
from __future__ import annotations

import pytest

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign.errors import ConfigError  # noqa: E402

from tests.video.clip_rows import tiny_modality, write_image_rows, write_video_rows  # noqa: E402


def _image_tokens(modality, records) -> list[int]:
    token = modality.processor.image_token_id
    return [sum(t == token for t in r["prompt_ids"]) for r in records]


def test_a_smaller_budget_gives_fewer_tokens(tmp_path):
    data = write_image_rows(tmp_path, sizes=((64, 64),))
    wide, _ = tiny_modality("tiny_qwen25_vl")  # the tiny processor's own budget: 32x32 .. 64x64
    narrow, _ = tiny_modality("tiny_qwen25_vl", pixel_budget=[16 * 16, 32 * 32])
    # a 64x64 image: 8x8 patches of 8 px, merged 2x2 -> 16 tokens; held to 32x32 -> 4
    assert _image_tokens(wide, wide.load_records(data, "rlaif_v")) == [16]
    assert _image_tokens(narrow, narrow.load_records(data, "rlaif_v")) == [4]


def test_a_fixed_size_processor_refuses_a_budget():
    with pytest.raises(ConfigError, match="pixel_budget"):
        tiny_modality("tiny_llava_next_video", pixel_budget=[1024, 4096])


def test_stats_give_tokens_per_clip(tmp_path):
    modality, _ = tiny_modality("tiny_qwen25_vl")  # 4 frames of 32x32: 8 tokens a clip
    figures = modality.stats(modality.load_records(write_video_rows(tmp_path), "video_qa"))
    assert figures["clips"] == 4 and figures["images"] == 0
    assert figures["tokens_per_clip_min"] == figures["tokens_per_clip_max"] == 8


def test_an_image_only_model_refuses_clips(tmp_path):
    from mmalign.errors import DataError

    modality, _ = tiny_modality("tiny_llava")
    with pytest.raises(DataError, match="field 'video': has a clip, but LlavaProcessor does not read video"):
        modality.load_records(write_video_rows(tmp_path), "video_qa")
