"""The recipe's ``model.options`` for the audio-diffusion modality (ACE-Step, Tango 2's form),
validated by the core before the modality is built (errors named ``model.options.<field>``)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mmalign.modalities.image_diffusion.options import StorageDtype


class AudioOptions(BaseModel):
    """Options of :class:`~mmalign.modalities.audio_diffusion.AudioDiffusionModality`.

    * ``seconds``: training clip length, taken from each clip's start (Tango: 10.24 s, 1024 mel
      frames at hop 160; ACE-Step: our choice); ``min_seconds``: shorter clips are refused,
      clips between the two are padded with silence.
    * ``caption_dropout``: probability a pair trains on the empty prompt.
    * ``cache`` / ``cache_dtype``: run the VAE and text encoders once, in ``prepare``.
    * ``max_sequence_length``: T5 tokens per caption for Tango (its default 512 is ours).
    * ``lyrics_field``: ACE-Step's lyrics column (empty lyrics: instrumental).
    * ``pairing``: ranked rows into pairs: ``best_worst`` or ``all`` (every pair, weighted by
      rank gap, AVP-RPO of MultiSoundGen, arXiv:2509.19999).
    * ``weighting_scheme`` and density: ACE-Step's flow times (Esser et al. 2024).
    * ``sample_steps``, ``guidance_scale``, ``samples_per_prompt``: validation samples.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    seconds: float = Field(10.24, gt=0)
    min_seconds: float = Field(1.0, ge=0)
    caption_dropout: float = Field(0.0, ge=0.0, le=1.0)
    cache: bool = True
    cache_dtype: StorageDtype | None = None
    max_sequence_length: int = Field(512, gt=0)
    pairing: Literal["best_worst", "all"] = "best_worst"
    weighting_scheme: Literal["logit_normal", "mode", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0.0)
    mode_scale: float = 1.29
    allow_empty_captions: bool = False
    sample_steps: int = Field(50, gt=0)
    guidance_scale: float = 3.0
    samples_per_prompt: int = Field(1, gt=0)


def parse_options(options: dict[str, Any]) -> AudioOptions:
    """:class:`AudioOptions` of ``model.options``, with the core's error messages."""
    from mmalign.config import validate_options

    return AudioOptions(**validate_options(AudioOptions, options, "audio_diffusion"))


def density(options: AudioOptions) -> dict[str, float]:
    return {"logit_mean": options.logit_mean, "logit_std": options.logit_std, "mode_scale": options.mode_scale}
