"""Reading clips with decord and writing them with PyAV: which frames come back, and the
errors a user sees for clips that cannot be used."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign.data.io import RowRef  # noqa: E402
from mmalign.errors import ConfigError, DataError  # noqa: E402
from mmalign.modalities.video_io import read_clip, read_frames, write_mp4  # noqa: E402

FRAMES, SIDE, FPS = 9, 32, 8.0
# one flat colour per frame, far apart in RGB so H.264 / yuv420p cannot blur one into another
COLOURS = np.array([(28 * i, 255 - 28 * i, (60 * i) % 256) for i in range(FRAMES)], dtype=np.int64)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = np.broadcast_to(COLOURS[:, None, None, :], (FRAMES, SIDE, SIDE, 3)).astype(np.uint8)
    path = tmp_path_factory.mktemp("video") / "colours.mp4"
    write_mp4(torch.from_numpy(frames), path, fps=FPS)
    return path


def frame_ids(frames: torch.Tensor) -> list[int]:
    """Which source frame each decoded frame is: the nearest colour at its centre."""
    centre = frames[:, SIDE // 2, SIDE // 2].numpy().astype(np.int64)
    return np.abs(centre[:, None, :] - COLOURS[None]).sum(-1).argmin(1).tolist()


def test_uniform_frames_span_the_clip(clip):
    frames, fps = read_frames(clip, num_frames=4)
    assert frames.dtype == torch.uint8 and tuple(frames.shape) == (4, SIDE, SIDE, 3)
    assert fps == pytest.approx(FPS)
    assert frame_ids(frames) == [0, 3, 5, 8]  # linspace(0, 8, 4).round()
    # decoded colours stay close to the written ones (visually lossless)
    centre = frames[:, SIDE // 2, SIDE // 2].numpy().astype(np.int64)
    assert np.abs(centre - COLOURS[[0, 3, 5, 8]]).max() <= 6


def test_read_clip_tells_where_frames_came_from(clip):
    read = read_clip(clip, num_frames=4)
    assert read.indices == [0, 3, 5, 8] and read.total_frames == FRAMES
    assert frame_ids(read.frames) == read.indices
    assert read.sampled_fps == pytest.approx(4 / 9 * FPS)


def test_fps_sampling_takes_one_frame_per_interval(clip):
    frames, _ = read_frames(clip, fps=2.0)  # one frame each 0.5 s of an 8 fps clip
    assert frame_ids(frames) == [0, 4, 8]
    every, _ = read_frames(clip, fps=30.0)  # faster than the clip: each frame once
    assert frame_ids(every) == list(range(FRAMES))


def test_bytes_read_like_the_file(clip):
    from_file, _ = read_frames(clip, num_frames=3)
    from_bytes, fps = read_frames(clip.read_bytes(), num_frames=3)
    assert fps == pytest.approx(FPS)
    assert torch.equal(from_file, from_bytes)


def test_missing_file_names_row_and_field(tmp_path):
    with pytest.raises(DataError) as err:
        read_frames(tmp_path / "nope.mp4", num_frames=2, where=RowRef("pairs.jsonl", 3), field="clip")
    text = str(err.value)
    assert text.startswith("pairs.jsonl, row 3, field 'clip': ")
    assert "nope.mp4' does not exist" in text and "Check the path" in text


def test_text_file_named_mp4_is_a_data_error(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(DataError) as err:
        read_frames(fake, num_frames=2, where=RowRef("pairs.jsonl", 0))
    assert "cannot decode video file" in str(err.value) and "notes.mp4" in str(err.value)
    assert "valid video" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no decord traceback
    with pytest.raises(DataError, match="the video bytes"):
        read_frames(b"not a video at all", num_frames=2)


def test_too_few_frames_says_how_many(clip):
    with pytest.raises(DataError) as err:
        read_frames(clip, num_frames=16, where=RowRef("pairs.jsonl", 7))
    text = str(err.value)
    assert "row 7" in text and "has 9 frames, fewer than num_frames=16" in text
    assert "Lower num_frames to at most 9" in text and "fps" in text


def test_clip_without_video_stream(tmp_path):
    import av

    path = tmp_path / "audio_only.mp4"
    with av.open(str(path), "w") as container:  # an MP4 holding only sound: no frames to read
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(DataError, match="has no video stream"):
        read_frames(path, num_frames=1)


def test_empty_inputs(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_frames(empty, num_frames=1)
    with pytest.raises(DataError, match="are empty"):
        read_frames(b"", num_frames=1)


@pytest.mark.parametrize("kwargs", [{}, {"num_frames": 4, "fps": 2.0}, {"num_frames": 0}, {"fps": -1.0}])
def test_sampling_must_be_one_of_num_frames_or_fps(clip, kwargs):
    with pytest.raises(ConfigError):
        read_frames(clip, **kwargs)


def test_write_mp4_refuses_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "a.mp4", fps=4)
    with pytest.raises(ValueError, match="even"):
        write_mp4(np.zeros((2, 7, 8, 3), np.uint8), tmp_path / "b.mp4", fps=4)
