"""The recipe's ``model.options`` for the video-diffusion modality (Wan, CogVideoX), validated by
the core before the modality is built (errors named ``model.options.<field>``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmalign.modalities.image_diffusion.options import StorageDtype


class VideoOptions(BaseModel):
    """Options of :class:`~mmalign.modalities.video_diffusion.VideoDiffusionModality`.

    * ``height``, ``width``: training size in pixels (multiples of 16; Wan 2.1 480p is 480 x 832,
      CogVideoX 480 x 720); each clip is resized to cover it and center-cropped.
    * ``num_frames``: frames per training clip, ``4k + 1`` (the causal VAEs map them to ``k + 1``
      latent frames; Wan 81, CogVideoX 49).
    * ``sample_fps``: how frames are picked from a clip: ``None`` spreads ``num_frames`` evenly
      from its first frame to its last; a rate takes ``num_frames`` consecutive frames at that
      rate from the start (a clip too short for them is refused).
    * ``caption_dropout``: probability that a pair is trained on the empty prompt.
    * ``cache``: run the VAE and the text encoder once, in ``prepare``; ``cache_dtype`` stores the
      cache in that dtype.
    * ``max_sequence_length``: T5 / UMT5 tokens per caption (None: the pipeline's default, 512
      for Wan and the transformer's ``max_text_seq_length``, 226, for CogVideoX).
    * ``weighting_scheme``, ``logit_mean``, ``logit_std``, ``mode_scale``: Wan's density of flow
      times before the scheduler's shift (:mod:`mmalign.modalities.denoising.flow_time`);
      CogVideoX draws integer timesteps uniformly, as its training script does.
    * ``videodpo_alpha``, ``videodpo_scale``: with ``videodpo_alpha`` set, a row's ``score``
      column becomes VideoDPO's pair weight ``(videodpo_scale / score) ** videodpo_alpha``
      (``weighting.py``), for ``data.weight_field: score``.
    * ``allow_empty_captions``: keep rows with an empty caption (refused by default).
    * ``sample_steps``, ``guidance_scale``, ``samples_per_prompt``, ``output_fps``: sampling for
      validation (``output_fps`` None: the model's own rate, Wan 16, CogVideoX 8).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    height: int = Field(480, gt=0, multiple_of=16)
    width: int = Field(832, gt=0, multiple_of=16)
    num_frames: int = Field(81, gt=0)
    sample_fps: float | None = Field(None, gt=0)
    caption_dropout: float = Field(0.0, ge=0.0, le=1.0)
    cache: bool = True
    cache_dtype: StorageDtype | None = None
    max_sequence_length: int | None = Field(None, gt=0)
    weighting_scheme: Literal["logit_normal", "mode", "uniform"] = "uniform"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0.0)
    mode_scale: float = 1.29
    videodpo_alpha: float | None = Field(None, ge=0.0)
    videodpo_scale: float = Field(0.72, gt=0.0)
    allow_empty_captions: bool = False
    sample_steps: int = Field(50, gt=0)
    guidance_scale: float = 5.0
    samples_per_prompt: int = Field(1, gt=0)
    output_fps: float | None = Field(None, gt=0)

    @field_validator("num_frames")
    @classmethod
    def _frames(cls, frames: int) -> int:
        if (frames - 1) % 4:
            lower = (frames - 1) // 4 * 4 + 1
            raise ValueError(f"num_frames must be 4k + 1 (the causal video VAEs compress time by 4: 4k + 1 "
                             f"frames -> k + 1 latent frames), e.g. {lower} or {lower + 4}")
        return frames


def parse_options(options: dict[str, Any]) -> VideoOptions:
    """:class:`VideoOptions` of ``model.options``, with the core's error messages."""
    from mmalign.config import validate_options

    return VideoOptions(**validate_options(VideoOptions, options, "video_diffusion"))


def density(options: VideoOptions) -> dict[str, float]:
    """The flow-time density's parameters, as ``flow_time.flow_sampler`` takes them."""
    return {"logit_mean": options.logit_mean, "logit_std": options.logit_std, "mode_scale": options.mode_scale}
