"""The recipe's ``model.options`` for the image-diffusion modality: a pydantic model the core
validates (errors named ``model.options.<field>``) before building the modality."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: options of earlier releases, and the key that replaced them
REPLACED = {"skip_bad_rows": "data.on_bad_row: skip"}
StorageDtype = Literal["float32", "float16", "bfloat16"]


class ImageOptions(BaseModel):
    """The options every text-to-image plugin shares (data, preprocessing, cache, sampling).

    * ``resolution``: square training size in pixels (SD 1.5: 512, SDXL, SD3, FLUX: 1024), a
      multiple of 8.
    * ``caption_dropout``: probability that a pair is trained on the empty prompt.
    * ``cache``: run the VAE and text encoders once in ``prepare`` and train on the cache;
      ``cache_dtype``: store the cache's tensors in this dtype (``bfloat16`` halves the disk).
    * ``crop``: ``center`` or ``random``; ``random_flip``: mirror pairs with probability 0.5.
    * ``vae_path``: a separate VAE folder (for example an fp16-safe SDXL VAE).
    * ``keep_ties``: keep Pick-a-Pic ties (label 0.5) instead of dropping them.
    * ``allow_empty_captions``: keep rows with an empty caption, trained unconditionally
      (refused by default: an empty caption is more often a broken row than a wish).
    * ``pairing``: ``unpaired`` splits each pair into a desirable and an undesirable row (KTO).
    * ``sample_steps``, ``guidance_scale``: sampling for evaluation and validation grids.
    * ``samples_per_prompt``: images per prompt (columns) in the validation grids.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    resolution: int = Field(512, gt=0, multiple_of=8)
    caption_dropout: float = Field(0.0, ge=0.0, le=1.0)
    cache: bool = True
    cache_dtype: StorageDtype | None = None
    crop: Literal["center", "random"] = "center"
    random_flip: bool = False
    vae_path: str | None = None
    keep_ties: bool = False
    allow_empty_captions: bool = False
    pairing: Literal["paired", "unpaired"] = "paired"
    sample_steps: int = Field(25, gt=0)
    guidance_scale: float = 7.5
    samples_per_prompt: int = Field(2, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, options: Any) -> Any:
        """An option that moved elsewhere is named with its new key, not called unknown."""
        for old, new in REPLACED.items():
            if isinstance(options, dict) and old in options:
                raise ValueError(f"model.options.{old} is no longer an option: set {new} to drop and count "
                                 "rows that cannot be used (in the recipe's data section; it covers every "
                                 "kind of bad row)")
        return options


class DiffusionOptions(ImageOptions):
    """Options of :class:`~mmalign.modalities.image_diffusion.ImageDiffusionModality`: the shared
    :class:`ImageOptions` and

    * ``draw``: ``forward`` noising, or ``inversion`` (InPO: x_t from DDIM inversion);
    * ``inversion_steps``: DDIM inversion grid size for ``draw: inversion``.
    """

    draw: Literal["forward", "inversion"] = "forward"
    inversion_steps: int = Field(10, gt=0)


def parse_options(options: dict[str, Any]) -> DiffusionOptions:
    """:class:`DiffusionOptions` of ``model.options``, with the core's error messages (the
    modality may be built without the trainer, as tests and scripts do)."""
    from mmalign.config import validate_options

    return DiffusionOptions(**validate_options(DiffusionOptions, options, "image_diffusion"))
