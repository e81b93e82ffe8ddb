"""Reading and writing video clips for the plugins that use them (video-language models, video
diffusion).

Reading goes through decord, writing through PyAV (H.264 in MP4, the format every video tool
loads). One place names every way a clip cannot be used, as a DataError with file, row and
field and what to do: a file that is missing or does not decode, a clip without frames, a clip
shorter than the frames asked for. Nothing raised inside decord reaches the user as a
traceback. The core never imports this module: it knows nothing about videos.
"""
from __future__ import annotations

import io
import math
import os
import re
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from mmalign.errors import ConfigError, DataError

if TYPE_CHECKING:
    from mmalign.data.io import RowRef

#: the H.264 quality writers use by default: 18 is visually lossless and keeps flat test
#: colours distinguishable after the yuv420p round trip
DEFAULT_CRF = 18


class Clip(NamedTuple):
    """Frames read from a video and where they came from.

    ``frames`` is uint8 ``[T, H, W, 3]``; ``fps`` the clip's native frame rate; ``indices``
    the source frame of each of the T frames; ``total_frames`` the clip's length.
    """

    frames: torch.Tensor
    fps: float
    indices: list[int]
    total_frames: int

    @property
    def sampled_fps(self) -> float:
        """Frames per second of the sampled frames on average (what a model's temporal
        position should follow): ``len(indices) / total_frames * fps``, the rate
        transformers' ``VideoMetadata.sampled_fps`` computes from the same fields."""
        return len(self.indices) / self.total_frames * self.fps


def read_frames(source: str | os.PathLike | bytes | bytearray, *, num_frames: int | None = None,
                fps: float | None = None, where: RowRef | None = None,
                field: str = "video") -> tuple[torch.Tensor, float]:
    """Decode frames of a clip (a file path or the encoded bytes) as uint8 ``[T, H, W, 3]`` RGB,
    and return them with the clip's native frame rate.

    Give exactly one of ``num_frames`` (that many frames spread evenly from the first to the
    last, indices ``linspace(0, n - 1, num_frames).round()``, as video-LLMs sample clips) or
    ``fps`` (one frame every ``1 / fps`` seconds from the start; a rate at or above the
    clip's own gives every frame once). ``where`` is the data row the clip belongs to and
    ``field`` its column; both only name the place in error messages. :func:`read_clip`
    returns the same frames with their source indices.
    """
    clip = read_clip(source, num_frames=num_frames, fps=fps, where=where, field=field)
    return clip.frames, clip.fps


def read_clip(source: str | os.PathLike | bytes | bytearray, *, num_frames: int | None = None,
              fps: float | None = None, where: RowRef | None = None, field: str = "video") -> Clip:
    """:func:`read_frames`, returning a :class:`Clip` that also holds the indices read and the
    clip's length (a Qwen-VL processor needs them as ``VideoMetadata`` to time the frames)."""
    _check_sampling(num_frames, fps)
    what = _describe(source)
    reader = _open(source, where, field, what)
    total = len(reader)
    native_fps = float(reader.get_avg_fps())
    if total == 0:
        raise _error(where, field, f"{what} has no frames",
                     "Replace it with a clip that has at least one frame or drop the row")
    if num_frames is not None:
        indices = uniform_indices(total, num_frames, where=where, field=field, what=what)
    else:
        indices = fps_indices(total, native_fps, fps, where=where, field=field, what=what)
    frames = _decode(reader, indices, where, field, what)
    return Clip(torch.from_numpy(frames), native_fps, indices, total)


def uniform_indices(total: int, num_frames: int, *, where: RowRef | None = None, field: str = "video",
                    what: str = "the clip") -> list[int]:
    """``num_frames`` frame indices spread evenly over ``total`` frames, first and last
    included. Refuses a clip with fewer frames than asked for: repeating frames would feed
    the model a still where the data promised motion."""
    if total < num_frames:
        raise _error(where, field, f"{what} has {total} frame{'s' if total != 1 else ''}, fewer than "
                     f"num_frames={num_frames}",
                     f"Lower num_frames to at most {total}, sample by fps instead, or drop the row")
    return np.linspace(0, total - 1, num_frames).round().astype(np.int64).tolist()


def fps_indices(total: int, native_fps: float, fps: float, *, where: RowRef | None = None,
                field: str = "video", what: str = "the clip") -> list[int]:
    """Indices of the frames nearest to the times ``0, 1/fps, 2/fps, ...`` up to the last
    frame of a ``total``-frame clip recorded at ``native_fps``; each index at most once."""
    if not math.isfinite(native_fps) or native_fps <= 0:
        raise _error(where, field, f"{what} does not record its frame rate",
                     "Sample it by num_frames instead, or re-encode it with a frame rate")
    step = native_fps / fps
    count = int(math.floor((total - 1) / step + 1e-9)) + 1
    indices = np.minimum((np.arange(count) * step).round(), total - 1).astype(np.int64)
    return np.unique(indices).tolist()


def write_mp4(frames: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: float, *,
              crf: int = DEFAULT_CRF) -> None:
    """Write uint8 RGB frames ``[T, H, W, 3]`` to ``path`` as H.264 (libx264, yuv420p) in MP4,
    at ``fps`` frames per second. yuv420p halves the chroma resolution, so height and width
    must be even. ``crf`` is x264's quality (0 lossless, 18 visually lossless, 23 its
    default)."""
    import av  # imported here: only writers need PyAV

    array = _frames_array(frames, "write_mp4")
    _, height, width, _ = array.shape
    with av.open(os.fspath(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the frames the encoder still holds


def write_gif(frames: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: float) -> None:
    """Write uint8 RGB frames ``[T, H, W, 3]`` to ``path`` as an animated GIF at ``fps``
    (FFmpeg's GIF encoder through PyAV, 3-3-2 bit colour: a preview that every browser plays,
    not an archive). GIF times frames in hundredths of a second, so the rate is rounded."""
    import av  # imported here: only writers need PyAV

    array = _frames_array(frames, "write_gif")
    _, height, width, _ = array.shape
    with av.open(os.fspath(path), mode="w", format="gif") as container:
        stream = container.add_stream("gif", rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb8"
        for frame in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _frames_array(frames: torch.Tensor | np.ndarray, writer: str) -> np.ndarray:
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{writer} takes uint8 frames [T, H, W, 3]; got {array.dtype} {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise ValueError(f"{writer} got no frames")
    if array.shape[1] % 2 or array.shape[2] % 2:
        raise ValueError(f"yuv420p needs even height and width; got {array.shape[1]}x{array.shape[2]}")
    return np.ascontiguousarray(array)


def _rate(fps: float):
    """PyAV wants the frame rate as an int or Fraction; 29.97 becomes 2997/100."""
    from fractions import Fraction

    if fps <= 0:
        raise ValueError(f"fps must be positive; got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _check_sampling(num_frames: int | None, fps: float | None) -> None:
    if (num_frames is None) == (fps is None):
        raise ConfigError("give exactly one of num_frames (frames spread over the clip) and fps "
                          f"(frames per second) to read a video; got num_frames={num_frames}, fps={fps}")
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int)
                                   or num_frames < 1):
        raise ConfigError(f"num_frames must be a positive integer; got {num_frames!r}")
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a positive number; got {fps!r}")


def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"the video bytes ({len(source)} bytes)"
    return f"video file '{os.fspath(source)}'"


def _open(source: Any, where: RowRef | None, field: str, what: str):
    """A decord ``VideoReader`` on ``source``; every failure becomes a DataError."""
    import decord  # imported here: only video plugins need it, and it is slow to load

    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise _error(where, field, f"{what} are empty", "Give the encoded clip (MP4, WebM, ...) or drop the row")
        target: Any = io.BytesIO(bytes(source))
    else:
        target = os.fspath(source)
        if not os.path.exists(target):
            raise _error(where, field, f"{what} does not exist",
                         "Check the path (relative paths are read from the working directory) or drop the row")
        if not os.path.isfile(target):
            raise _error(where, field, f"{what} is not a file", "Point the field at a video file or drop the row")
        if os.path.getsize(target) == 0:
            raise _error(where, field, f"{what} is empty (0 bytes)", "Replace it with a valid clip or drop the row")
    try:
        return decord.VideoReader(target)
    except Exception as exc:  # decord raises RuntimeError / DECORDError with its C++ log text
        if "cannot find video stream" in str(exc):
            raise _error(where, field, f"{what} has no video stream (audio only, or no frames)",
                         "Replace it with a clip that has frames or drop the row") from None
        raise _error(where, field, f"cannot decode {what}: not a video decord can open",
                     "Replace it with a valid video (MP4 / WebM / MKV) or drop the row") from None


def _decode(reader, indices: list[int], where: RowRef | None, field: str, what: str) -> np.ndarray:
    try:
        frames = reader.get_batch(indices).asnumpy()
    except Exception as exc:  # a clip whose index promises frames its stream cannot deliver
        raise _error(where, field, f"cannot decode frames {indices} of {what} ({_first_line(exc)})",
                     "Re-encode the clip (for example with ffmpeg -i in.mp4 out.mp4) or drop the row") from None
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _first_line(exc: BaseException) -> str:
    """decord's message without the ``[hh:mm:ss] file.cc:N:`` prefix of its C++ log."""
    lines = str(exc).strip().splitlines()
    text = re.sub(r"^\[[0-9:]+\] \S+:\d+: ", "", lines[0]) if lines else type(exc).__name__
    return text[:200]


def _error(where: RowRef | None, field: str, message: str, hint: str) -> DataError:
    if where is not None:
        return where.error(field, message, hint)
    return DataError(message, field=field, hint=hint)
