"""Video pair data: the schema, the frames a training clip is made of, and each bad clip refused
with a message naming file, row and field and what to do."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.errors import ConfigError, DataError

from mmalign.modalities.video_diffusion import clips
from mmalign.modalities.video_diffusion.example import moving_square
from mmalign.modalities.video_diffusion.options import VideoOptions
from mmalign.modalities.video_diffusion.records import load_records
from mmalign.modalities.video_io import write_mp4

OPTIONS = VideoOptions(height=32, width=32, num_frames=9)


def table(folder: Path, rows: list[dict]) -> str:
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def clip(folder: Path, name: str, frames: int = 9, size: tuple[int, int] = (32, 32)) -> str:
    h, w = size
    data = moving_square((200, 50, 40), frames=frames, size=max(h, w))[:, :h, :w]
    write_mp4(data, folder / name, fps=8)
    return name


@pytest.fixture
def good(tmp_path) -> dict:
    return {"prompt": "a red square", "chosen_video": clip(tmp_path, "a.mp4"),
            "rejected_video": clip(tmp_path, "b.mp4", size=(32, 32))}


def test_pairs_load_with_paths_digests_and_the_score(pairs_file):
    records = load_records(pairs_file, "video_pairs", OPTIONS)
    assert [r["sample_id"] for r in records] == [f"pairs.jsonl#{i}" for i in range(4)]
    first = records[0]
    assert Path(first["videos"][0]).name == "chosen-0.mp4" and Path(first["videos"][0]).is_absolute()
    assert first["video_fields"] == ["chosen_video", "rejected_video"]
    assert first["digests"][0] != first["digests"][1] and len(first["digests"][0]) == 32
    assert [r["fields"]["score"] for r in records] == pytest.approx([0.5, 0.6, 0.7, 0.8])


def test_videodpo_alpha_turns_the_score_into_the_pair_weight(pairs_file):
    options = VideoOptions(height=32, width=32, num_frames=9, videodpo_alpha=2.0)
    records = load_records(pairs_file, "video_pairs", options)
    raw = [r["fields"]["score_raw"] for r in records]
    assert [r["fields"]["score"] for r in records] == pytest.approx([(0.72 / s) ** 2.0 for s in raw])


def test_frames_spread_over_the_clip_or_taken_at_a_rate(tmp_path):
    name = clip(tmp_path, "long.mp4", frames=25)  # 25 frames at 8 fps
    where = RowRef(str(tmp_path / "t.jsonl"), 0)
    source = clips.video_source(name, where, "chosen_video")
    spread = clips.read_training_frames(source, 9, None, where, "chosen_video")
    at_rate = clips.read_training_frames(source, 9, 4.0, where, "chosen_video")  # every 2nd frame from the start
    every = clips.read_training_frames(source, 25, None, where, "chosen_video")
    torch.testing.assert_close(spread, every[::3], rtol=0, atol=0)  # linspace(0, 24, 9) = 0, 3, ..., 24
    torch.testing.assert_close(at_rate, every[:18:2], rtol=0, atol=0)


def test_pixels_cover_the_training_size_and_are_center_cropped():
    frames = torch.zeros(3, 20, 40, 3, dtype=torch.uint8)
    frames[:, :, 10:30] = 255  # a white middle half
    pixels = clips.to_pixels(frames, 16, 16)  # 20 x 40 -> 16 x 32, then the middle 16 columns
    assert pixels.shape == (3, 3, 16, 16)
    assert bool((pixels > 0.5).all())  # no black column: the crop is the middle (its edges antialiased)
    torch.testing.assert_close(pixels[..., 2:-2], torch.ones(3, 3, 16, 12))


BAD = {
    "too short": ({"chosen_video": ("short.mp4", 5)},
                  r"row 0, field 'chosen_video': video file '.*short\.mp4' has 5 frames, fewer than num_frames=9"),
    "mismatched size": ({"rejected_video": ("wide.mp4", 9, (32, 40))},
                        r"row 0, field 'rejected_video': the clips of a pair differ in frame size "
                        r"\(chosen_video is 32x32, rejected_video is 40x32\)\. Re-encode both clips"),
    "unreadable": ({"chosen_video": "garbage"},
                   r"row 0, field 'chosen_video': cannot decode video file '.*junk\.mp4': not a video decord can open"),
    "missing": ({"rejected_video": "missing"},
                r"row 0, field 'rejected_video': video file '.*nowhere\.mp4' does not exist\. Fix the path"),
    "score not a number": ({"score": "high"}, r"row 0, field 'score': the pair's score must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_clip_is_refused_with_its_message(case, tmp_path, good):
    change, message = BAD[case]
    row = dict(good)
    for field, value in change.items():
        if value == "garbage":
            (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 50)
            value = "junk.mp4"
        elif value == "missing":
            value = "nowhere.mp4"
        elif isinstance(value, tuple):
            value = clip(tmp_path, *value)
        row[field] = value
    path = table(tmp_path, [row, good])
    with pytest.raises(DataError, match=message):
        load_records(path, "video_pairs", OPTIONS)
    checks = RowChecks("skip")  # data.on_bad_row: skip drops and counts the row, keeps the good one
    kept = load_records(path, "video_pairs", OPTIONS, checks=checks)
    assert len(kept) == 1 and kept[0]["sample_id"] == "pairs.jsonl#1"
    assert sum(n for k, n in checks.counts.items() if k.startswith("dropped:")) == 1


def test_a_clip_too_short_at_the_sampling_rate_is_refused(tmp_path, good):
    options = VideoOptions(height=32, width=32, num_frames=9, sample_fps=4.0)  # 9 frames at 8 fps: 1.1 s
    with pytest.raises(DataError, match=re.escape("the clip lasts 1.12 s (9 frames at 8 fps): 5 frames at "
                                                  "sample_fps=4, fewer than num_frames=9")):
        load_records(table(tmp_path, [good]), "video_pairs", options)


def test_missing_columns_and_empty_captions_are_named(tmp_path, good):
    with pytest.raises(DataError, match="field 'rejected_video': is missing"):
        load_records(table(tmp_path, [{k: v for k, v in good.items() if k != "rejected_video"}]), "video_pairs",
                     OPTIONS)
    with pytest.raises(DataError, match="field 'prompt': is empty. Give the row a caption"):
        load_records(table(tmp_path, [dict(good, prompt="  ")]), "video_pairs", OPTIONS)
    with pytest.raises(DataError, match="needs a positive score|weights pairs by their score, but this row has none"):
        load_records(table(tmp_path, [good]), "video_pairs",
                     VideoOptions(height=32, width=32, num_frames=9, videodpo_alpha=1.0))


def test_frame_counts_that_no_causal_vae_maps_are_refused():
    with pytest.raises(ConfigError, match=r"model.options.num_frames: num_frames must be 4k \+ 1"):
        from mmalign.modalities.video_diffusion.options import parse_options

        parse_options({"num_frames": 16})
