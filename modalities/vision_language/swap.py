"""The other image or clip of a conditional term (mDPO's corrupted or given rejected image,
Re-Align's retrieved one, ms-swift's ``rejected_videos`` / ``rejected_audios``), brought to the
size of the row's own so that it becomes as many tokens as the prompt holds for it.

A fixed-size processor (LLaVA) makes the same number of tokens of any image, and is left
alone; a pixel-budget one (Qwen2-VL) makes its token count from the size, so the swapped
medium is resized to the original's. A clip must also have the original's frame count.
"""
from __future__ import annotations

import torch
from PIL import Image

from mmalign.data.io import RowRef
from mmalign.modalities.video_io import Clip


def fit_image(image: Image.Image, like: Image.Image, dynamic: bool) -> Image.Image:
    """``image`` at ``like``'s size when the processor's token count follows the size."""
    if not dynamic or image.size == like.size:
        return image
    return image.resize(like.size, Image.BICUBIC)


def resized_clip(clip: Clip, like: Clip, where: RowRef) -> Clip:
    """``clip`` with ``like``'s frame size (bilinear); refused when the frame counts differ."""
    if clip.frames.shape[0] != like.frames.shape[0]:
        raise where.error("rejected_video", f"gives {clip.frames.shape[0]} frames where the row's clip gives "
                                            f"{like.frames.shape[0]}",
                          "Sample clips by video_frames (the same count for every clip), or use clips of one length")
    if clip.frames.shape[1:3] == like.frames.shape[1:3]:
        return clip
    frames = clip.frames.permute(0, 3, 1, 2).float()
    frames = torch.nn.functional.interpolate(frames, size=tuple(like.frames.shape[1:3]), mode="bilinear",
                                             align_corners=False, antialias=True)
    frames = frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return clip._replace(frames=frames)


def fitted_sound(sound: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``sound`` cut or padded with silence to ``like``'s length: an audio encoder's token
    count follows the length."""
    if sound.shape[0] >= like.shape[0]:
        return sound[: like.shape[0]]
    return torch.nn.functional.pad(sound, (0, like.shape[0] - sound.shape[0]))
