"""The recipe's ``model.options`` for the image-diffusion modality, validated."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mmalign.errors import ConfigError

CROPS = ("center", "random")
DRAWS = ("forward", "inversion")
PAIRINGS = ("paired", "unpaired")


@dataclass(frozen=True)
class DiffusionOptions:
    """Options of :class:`~mmalign.modalities.image_diffusion.ImageDiffusionModality`.

    * ``resolution``: square training size in pixels (SD 1.5: 512, SDXL: 1024).
    * ``caption_dropout``: probability that a pair is trained on the empty prompt.
    * ``cache``: run the VAE and text encoders once in ``prepare`` and train on the cache.
    * ``crop``: ``center`` or ``random``; ``random_flip``: mirror pairs with probability 0.5.
    * ``vae_path``: a separate VAE folder (for example an fp16-safe SDXL VAE).
    * ``keep_ties``: keep Pick-a-Pic ties (label 0.5) instead of dropping them.
    * ``allow_empty_captions``: keep rows with an empty caption, trained unconditionally
      (refused by default: an empty caption is more often a broken row than a wish).
    * ``pairing``: ``unpaired`` splits each pair into a desirable and an undesirable row (KTO).
    * ``draw``: ``forward`` noising, or ``inversion`` (InPO: x_t from DDIM inversion).
    * ``inversion_steps``: DDIM inversion grid size for ``draw: inversion``.
    * ``sample_steps``, ``guidance_scale``: sampling for evaluation and validation grids.
    * ``samples_per_prompt``: images per prompt (columns) in the validation grids.
    """

    resolution: int = 512
    caption_dropout: float = 0.0
    cache: bool = True
    crop: str = "center"
    random_flip: bool = False
    vae_path: str | None = None
    keep_ties: bool = False
    allow_empty_captions: bool = False
    pairing: str = "paired"
    draw: str = "forward"
    inversion_steps: int = 10
    sample_steps: int = 25
    guidance_scale: float = 7.5
    samples_per_prompt: int = 2

    def __post_init__(self) -> None:
        _positive_int("resolution", self.resolution)
        _positive_int("inversion_steps", self.inversion_steps)
        _positive_int("sample_steps", self.sample_steps)
        _positive_int("samples_per_prompt", self.samples_per_prompt)
        if self.resolution % 8:
            raise ConfigError(f"model.options.resolution must be a multiple of 8, got {self.resolution}")
        if not isinstance(self.caption_dropout, (int, float)) or not 0.0 <= self.caption_dropout <= 1.0:
            raise ConfigError(
                f"model.options.caption_dropout must be a probability in [0, 1], got {self.caption_dropout!r}"
            )
        for name in ("cache", "random_flip", "keep_ties", "allow_empty_captions"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"model.options.{name} must be true or false, got {getattr(self, name)!r}")
        _choice("crop", self.crop, CROPS)
        _choice("draw", self.draw, DRAWS)
        _choice("pairing", self.pairing, PAIRINGS)
        if self.vae_path is not None and not isinstance(self.vae_path, str):
            raise ConfigError(f"model.options.vae_path must be a folder path, got {self.vae_path!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


#: options of earlier releases, and the key that replaced them
REPLACED = {"skip_bad_rows": "data.on_bad_row: skip"}


def parse_options(options: dict[str, Any]) -> DiffusionOptions:
    """:class:`DiffusionOptions` from the recipe's ``model.options``; an option that moved
    elsewhere is named with its new key instead of being silently ignored or half-kept."""
    for old, new in REPLACED.items():
        if old in options:
            raise ConfigError(f"model.options.{old} is no longer an option: set {new} to drop and count "
                              "rows that cannot be used (in the recipe's data section; it covers every "
                              "kind of bad row)")
    return DiffusionOptions(**options)


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"model.options.{name} must be a positive integer, got {value!r}")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"model.options.{name} must be one of {', '.join(allowed)}; got {value!r}")
