"""A pair's clips as the VAE takes them: frames picked, sizes checked, resized and cropped.

Clips are read with decord through :mod:`mmalign.modalities.video_io`, whose DataErrors name
the file, row and field of a clip that is missing, empty or undecodable, or shorter than the
frames asked for. Here: where a cell's clip is (a path, relative to the data file's folder,
or the encoded bytes), which frames a training clip is made of, the one frame size both clips
of a pair must share, and the shared resize and center crop to the training size.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmalign.data.io import RowRef
from mmalign.modalities.media_cells import Source, media_source
from mmalign.modalities.video_io import read_clip



def video_source(value: Any, where: RowRef, field: str) -> Source:
    """A clip cell as a path (relative paths are read from the data file's folder) or bytes
    (raw, or a ``{"bytes", "path"}`` dict as ``datasets`` stores media)."""
    return media_source(value, where, field, "video", "MP4, WebM")


def read_training_frames(source: Source, num_frames: int, sample_fps: float | None, where: RowRef,
                         field: str) -> torch.Tensor:
    """``num_frames`` uint8 frames ``[T, H, W, 3]``: spread evenly over the clip, or with
    ``sample_fps`` the first ``num_frames`` at that rate."""
    if sample_fps is None:
        return read_clip(source, num_frames=num_frames, where=where, field=field).frames
    clip = read_clip(source, fps=sample_fps, where=where, field=field)
    if len(clip.indices) < num_frames:
        seconds = clip.total_frames / clip.fps
        raise where.error(field, f"the clip lasts {seconds:.2f} s ({clip.total_frames} frames at {clip.fps:g} fps): "
                          f"{len(clip.indices)} frames at sample_fps={sample_fps:g}, fewer than "
                          f"num_frames={num_frames}", "Lower model.options.num_frames or sample_fps, or drop the row")
    return clip.frames[:num_frames]


def check_same_size(frames: list[torch.Tensor], fields: list[str], where: RowRef) -> None:
    """The clips of a pair must have one frame size: one crop box then means one region of both."""
    sizes = [tuple(f.shape[1:3]) for f in frames]
    if len(set(sizes)) > 1:
        described = ", ".join(f"{name} is {w}x{h}" for name, (h, w) in zip(fields, sizes))
        raise where.error(fields[-1], f"the clips of a pair differ in frame size ({described})",
                          "Re-encode both clips of the pair at one size (width x height), or drop the row")


def to_pixels(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, height, width]`` in [-1, 1]: resized (bilinear,
    antialiased) to cover ``height x width`` keeping the aspect ratio, then center-cropped."""
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [T, 3, H, W]
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return x[:, :, top:top + height, left:left + width].permute(1, 0, 2, 3).contiguous()


def pair_frames(sources: list[Source], fields: list[str], where: RowRef, num_frames: int,
                sample_fps: float | None) -> list[torch.Tensor]:
    """The training frames of one row's clips (winner first), of one frame size."""
    frames = [read_training_frames(s, num_frames, sample_fps, where, f) for s, f in zip(sources, fields)]
    check_same_size(frames, fields, where)
    return frames


def pair_pixels(sources: list[Source], fields: list[str], where: RowRef, num_frames: int,
                sample_fps: float | None, height: int, width: int) -> torch.Tensor:
    """The clips of one row as ``[S, 3, T, height, width]`` in [-1, 1] (winner first)."""
    frames = pair_frames(sources, fields, where, num_frames, sample_fps)
    return torch.stack([to_pixels(f, height, width) for f in frames])


def record_pixels(record: dict, num_frames: int, sample_fps: float | None, height: int, width: int) -> torch.Tensor:
    """A loaded record's clips (``records.py``) as ``[S, 3, T, height, width]`` in [-1, 1]."""
    return pair_pixels(record["videos"], record["video_fields"], RowRef(record["file"], record["row"]), num_frames,
                       sample_fps, height, width)
