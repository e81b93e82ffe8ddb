"""A row's images, clips and sounds, opened, and what the model's own processor makes of them.

Every family prepares pixels its own way: LLaVA resizes each image to one fixed size,
LLaVA-NeXT-Video stacks a clip's frames ``[B, T, C, H, W]``, Qwen2-VL / Qwen2.5-VL flatten an
image or clip into patches and say how to cut them back with ``image_grid_thw`` /
``video_grid_thw`` (one ``(t, h, w)`` row per image or clip; a clip also carries
``second_per_grid_ts``, the seconds its temporal patches span, for the 3-D RoPE). Rather than
mirror each, :func:`media_inputs` calls the processor itself on the prompts' text and keeps
everything it returns except the token ids: the pixels, the grids and the timing, in row
order, exactly as the model's own training code would receive them.

A clip is read by :func:`~mmalign.modalities.video_io.read_clip` (``num_frames`` uniform
frames, or frames at ``fps``); its frame indices and native rate go to the processor as
``VideoMetadata``, without which Qwen2.5-VL assumes 24 fps and times the frames wrongly. A
sound (an audio-language model's input, Qwen2-Audio) is decoded by soundfile, resampled to the
processor's rate and mixed to mono (:mod:`mmalign.modalities.audio_io`), and cut to
``audio_seconds`` (Qwen2-Audio's encoder reads at most 30 s).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple, Sequence

from torch import Tensor

from mmalign.data.io import RowRef
from mmalign.modalities.vision_language.images import open_image, resolve_path
from mmalign.modalities.video_io import Clip, read_clip

#: what a processor returns about the text, not the media
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


class Sampling(NamedTuple):
    """How clips are read: ``num_frames`` uniform frames, or one frame every ``1 / fps`` s;
    how sounds are read: resampled to ``audio_rate`` Hz, at most ``audio_seconds`` long."""

    num_frames: int | None = 8
    fps: float | None = None
    audio_rate: int = 16000
    audio_seconds: float = 30.0


class Media(NamedTuple):
    """One row's opened images (RGB PIL), clips and sounds (mono float32 waves)."""

    images: list
    clips: list[Clip]
    audios: tuple = ()


def open_clip(source: Any, where: RowRef, field: str, sampling: Sampling) -> Clip:
    """Read one clip (a path relative to the data file, or encoded bytes); a :class:`Clip`
    made by code (a perturbed clip) is taken as it is."""
    if isinstance(source, Clip):
        return source
    if isinstance(source, dict):  # a datasets Video value
        source = source.get("bytes") or source.get("path")
    if isinstance(source, str):
        source = resolve_path(source, where)
    return read_clip(source, num_frames=sampling.num_frames, fps=sampling.fps, where=where, field=field)


def open_audio(source: Any, where: RowRef, field: str, sampling: Sampling, repairs: Counter | None = None) -> Tensor:
    """One sound as a mono float32 wave ``[samples]`` at ``sampling.audio_rate``, cut to
    ``audio_seconds`` (counted in ``repairs``); a tensor made by code is taken as it is."""
    from mmalign.modalities.audio_io import audio_source, read_audio, to_model

    if isinstance(source, Tensor):
        return source
    wave, rate = read_audio(audio_source(source, where, field), where, field)
    if wave.shape[-1] == 0:
        raise where.error(field, "the audio has no samples", "Replace the clip or drop the row")
    wave = to_model(wave, rate, sampling.audio_rate, 1)[0]
    limit = round(sampling.audio_seconds * sampling.audio_rate)
    if wave.shape[0] > limit and repairs is not None:
        repairs["repaired: audio cut to audio_seconds"] += 1
    return wave[:limit].contiguous()


def open_media(record: dict[str, Any], sampling: Sampling, repairs: Counter | None = None) -> Media:
    """The record's images, clips and sounds, opened."""
    where = RowRef(record["file"], record["row"])
    images = [open_image(image, where, "image", repairs) for image in record.get("images") or []]
    clips = [open_clip(video, where, "video", sampling) for video in record.get("videos") or []]
    audios = tuple(open_audio(audio, where, "audio", sampling, repairs) for audio in record.get("audios") or [])
    return Media(images, clips, audios)


def processor_kwargs(images: Sequence, clips: Sequence[Clip], audios: Sequence[Tensor] = (),
                     audio_rate: int = 16000) -> dict[str, Any]:
    """The media keyword arguments of a processor call (none for a text-only row)."""
    kwargs: dict[str, Any] = {}
    if audios:
        kwargs["audio"] = [wave.numpy() for wave in audios]
        kwargs["sampling_rate"] = audio_rate
    if images:
        kwargs["images"] = list(images)
    if clips:
        from transformers.video_utils import VideoMetadata

        kwargs["videos"] = [clip.frames for clip in clips]
        kwargs["video_metadata"] = [VideoMetadata(total_num_frames=clip.total_frames, fps=clip.fps,
                                                  frames_indices=clip.indices) for clip in clips]
    return kwargs


def audio_rate(processor) -> int:
    """The sampling rate the processor's feature extractor reads sounds at (16 kHz without one)."""
    return int(getattr(getattr(processor, "feature_extractor", None), "sampling_rate", 16000))


def media_inputs(processor, texts: Sequence[str], media: Sequence[Media]) -> dict[str, Tensor]:
    """The model inputs of every row's images, clips and sounds, in row order (empty when
    there are none): the processor run on the rows' prompt texts, without the token ids."""
    images = [image for row in media for image in row.images]
    clips = [clip for row in media for clip in row.clips]
    audios = [wave for row in media for wave in row.audios]
    if not images and not clips and not audios:
        return {}
    kwargs = processor_kwargs(images, clips, audios, audio_rate(processor))
    out = processor(text=list(texts), return_tensors="pt", padding=True, **kwargs)
    return {key: value for key, value in out.items() if key not in TOKEN_KEYS and isinstance(value, Tensor)}


def pixel_budget_processor(processor) -> bool:
    """Whether the processor resizes to a pixel budget, so an image's token count follows its
    size (Qwen2-VL / Qwen2.5-VL: ``merge_size`` patches merged per token)."""
    return hasattr(getattr(processor, "image_processor", None), "merge_size")


def set_pixel_budget(processor, min_pixels: int, max_pixels: int) -> None:
    """Give a pixel-budget processor (images and video frames) ``[min_pixels, max_pixels]``;
    refuse one without a budget (a fixed-size processor would silently ignore it)."""
    from mmalign.errors import ConfigError

    if not pixel_budget_processor(processor):
        raise ConfigError(f"model.options.pixel_budget: {type(processor).__name__} resizes every image to "
                          "one size and has no pixel budget; remove the option")
    for part in (processor.image_processor, getattr(processor, "video_processor", None)):
        if part is not None:
            part.size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
            for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
                if hasattr(part, name):
                    setattr(part, name, int(value))
