"""The conformance kit (``mmalign check-plugin vision_language --builder ...``) passes for the
video-language families on clip data: protocol, records, shapes, units, gradient, step 0,
per-row draws and both exports."""
from __future__ import annotations

import pytest

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign.modality import ModelSpec  # noqa: E402
from mmalign.testing import check_modality  # noqa: E402

from tests.video.clip_rows import write_video_rows  # noqa: E402


@pytest.mark.parametrize("builder", ["tiny_qwen25_vl", "tiny_llava_next_video"])
def test_every_check_passes_on_clips(builder, tmp_path):
    results = check_modality("vision_language", spec=ModelSpec(builder=builder), data=write_video_rows(tmp_path),
                             options={"max_length": 256, "video_frames": 4}, schema="video_qa")
    failed = [str(r) for r in results if not r.ok]
    assert not failed and len(results) == 9
