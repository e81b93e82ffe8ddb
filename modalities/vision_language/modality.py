"""The ``vision_language`` modality: preference alignment of LLaVA-style models.

The trainer drives it through the modality contract (``mmalign.modality``): load the policy
and its processor, load and validate records, collate, draw (the mDPO image corruption, the
only randomness), score, export, sample. Scoring, truncation, fields and export come from
:mod:`mmalign.modalities.tokens`; what is left here is about images.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any, Literal, Sequence

import torch
from pydantic import Field, StrictBool, StrictInt, field_validator
from torch import Tensor, nn

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.errors import ConfigError, DataError
from mmalign.modalities.vision_language.example import example
from mmalign.modalities.tokens.export import export_pretrained
from mmalign.modalities.tokens.fields import pair_fields, row_fields
from mmalign.modalities.tokens.options import TokenOptions, parse_options
from mmalign.modalities.tokens.sampling import refuse_init
from mmalign.modalities.tokens.scoring import Condition
from mmalign.modalities.vision_language import feature_cache
from mmalign.modalities.vision_language import records as _records
from mmalign.modalities.vision_language.images import corrupt_image, open_image
from mmalign.modalities.vision_language.sampling import generate
from mmalign.modalities.vision_language.vision import vision_frozen
from mmalign.modalities.vision_language.scoring import SUPPORTED_NEEDS, feature_condition, pixel_condition, score
from mmalign.modality import ModelSpec, normalize_seeds, row_generator
from mmalign.objectives.conditional import CORRUPTED
from mmalign.surrogate import Batch, Draw, Surrogate

log = logging.getLogger("mmalign")

#: LoRA on the language model's attention projections only; CLIP's vision tower also has
#: q_proj / k_proj / v_proj, so plain suffixes would adapt it too
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


class VisionLanguageOptions(TokenOptions):
    """:class:`~mmalign.modalities.tokens.options.TokenOptions` with vision-language defaults
    (``max_length`` 2048, ``keep_start`` truncation, ``packed``: images and prompt encoded once
    per pair), and:

    * ``corruption`` / ``corruption_keep``: how mDPO's corrupted image is drawn ("crop" keeps a
      random crop of area fraction in ``corruption_keep``; "mask" greys out the rest);
    * ``cache_image_features``: compute each image's projected features once, in ``prepare``,
      when the vision tower and projector are frozen (:mod:`.feature_cache`).
    """

    max_length: StrictInt | None = Field(2048, ge=2)
    truncation: Literal["keep_end", "keep_start"] = "keep_start"
    packed: StrictBool = True
    max_new_tokens: StrictInt = Field(64, ge=1)
    corruption: Literal["crop", "mask"] = "crop"
    corruption_keep: tuple[float, float] = (0.05, 0.2)
    cache_image_features: StrictBool = False

    @field_validator("corruption_keep")
    @classmethod
    def _fraction_range(cls, keep: tuple[float, float]) -> tuple[float, float]:
        if not 0 < keep[0] <= keep[1] <= 1:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1")
        return keep


class VisionLanguageModality:
    """LLaVA-style image-text models (``LlavaForConditionalGeneration``), scored per pair
    (options: :class:`VisionLanguageOptions`)."""

    Options = VisionLanguageOptions
    supported_needs = SUPPORTED_NEEDS
    policy_dependent_draw = False

    def __init__(self, **options: Any):
        self.options = parse_options(VisionLanguageOptions, options, "vision_language")
        self.processor = None
        self.policy: nn.Module | None = None  # for prepare(): its frozen vision side
        self._lora_targets: list[str] = []
        #: repairs made to the data (RGBA -> RGB, truncated responses), counted for the log
        self.repairs: Counter = Counter()

    @property
    def max_length(self) -> int | None:
        return self.options.max_length

    @property
    def packed(self) -> bool:
        return self.options.packed

    @packed.setter
    def packed(self, value: bool) -> None:  # benchmarks and tests compare the two paths
        self.options.packed = bool(value)

    # -- model ----------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """The LLaVA model from ``spec.path`` (a local folder) or a ``models.llava`` builder;
        the processor is kept on ``self``."""
        from mmalign.models.llava import PARTS_BUILDERS, load_llava

        if spec.path:
            parts = load_llava(spec.path, spec.dtype)
        elif spec.builder in PARTS_BUILDERS:
            try:
                parts = PARTS_BUILDERS[spec.builder](**(spec.builder_args or {}))
            except TypeError as exc:
                raise ConfigError(f"model.builder_args for '{spec.builder}': {exc}") from exc
            parts.model.to(spec.dtype)
        else:
            raise ConfigError(f"model.builder '{spec.builder}' is not a vision-language builder; "
                              f"use one of {', '.join(PARTS_BUILDERS)} or give model.path")
        self.processor, self.policy = parts.processor, parts.model
        self._lora_targets = [name for name, _ in parts.model.named_modules() if re.fullmatch(LORA_TARGETS, name)]
        return parts.model

    @property
    def lora_target_modules(self) -> list[str]:
        """Full names of the language model's q/k/v/o projections (matching :data:`LORA_TARGETS`)
        of the loaded policy; empty before :meth:`load_policy`, so LoRA then fails loudly
        instead of adapting the vision tower."""
        return list(self._lora_targets)

    # -- data -----------------------------------------------------------------------------
    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Validated records; tokenized now when the policy (hence the processor) is loaded.

        Repairs are counted in ``self.repairs`` and, for :func:`mmalign.data.checks.load_checked`,
        in ``checks.counts``; ``checks`` also says whether a bad row stops the run or is dropped."""
        checks = checks or RowChecks()
        found: Counter = Counter()
        encode = self._encoder(found) if self.processor is not None else None
        records = _records.load_records(path, schema, encode=encode, repairs=found, checks=checks)
        self.repairs.update(found)
        checks.counts.update(found)
        return records

    def check_record(self, record: dict[str, Any]) -> None:
        """Tokenise a record (its images opened, responses fitted to ``max_length``, repairs
        counted) once the processor is loaded: every row is checked before training."""
        if "prompt_ids" not in record:
            self._encoder(self.repairs)(record)

    def _encoder(self, repairs: Counter):
        return _records.encoder(self.processor, self.options.max_length, repairs, self.options.truncation)

    def prepare(self, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
        """With ``cache_image_features``, each image's projected features computed once
        (:mod:`.feature_cache`), when the policy's vision side is frozen; else the records as they are."""
        if not self.options.cache_image_features or self.policy is None:
            return records
        if not vision_frozen(self.policy):
            log.warning("vision_language: cache_image_features is off for this run: the vision tower or "
                        "projector trains (or has an adapter), so its features change")
            return records
        return feature_cache.cache_features(self.policy, self.processor, records, cache_dir)

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Token ids (ragged), pixel values of every image in row order (or their cached
        features), the images themselves (for mDPO's corruption) and the per-row and per-token fields."""
        for record in records:
            self.check_record(record)
        images = [self._open_all(r) for r in records]
        features = feature_cache.cached_features(list(records))
        inputs: dict[str, Any] = {
            "prompt_ids": [r["prompt_ids"] for r in records],
            "chosen_ids": [r["chosen_ids"] for r in records],
            "rejected_ids": [r["rejected_ids"] for r in records],
            "pad_id": self.processor.tokenizer.pad_token_id,
            "images": images,
            "image_features": features,
            "pixel_values": None if features is not None else self._pixels([i for row in images for i in row]),
            "where": [RowRef(r["file"], r["row"]) for r in records],
        }
        for key in _records.EXTRA_IMAGES:
            inputs[key] = [open_image(r[key], RowRef(r["file"], r["row"]), key) if key in r else None
                           for r in records]
        return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records],
                     fields={**pair_fields(records), **row_fields(records)})

    def _open_all(self, record: dict[str, Any]) -> list:
        where = RowRef(record["file"], record["row"])
        return [open_image(image, where, "image", self.repairs) for image in record["images"]]

    def _pixels(self, images: list) -> Tensor | None:
        if not images:
            return None
        return self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]

    # -- one step -------------------------------------------------------------------------
    def draw(self, batch: Batch, seed: int, model: nn.Module | None = None) -> Draw:
        """One corruption seed per row from ``row_generator(seed, sample_id, epoch)``: mDPO's
        corrupted image is the same for policy and reference and survives reshuffling."""
        seeds = [int(torch.randint(0, 2**62, (), generator=row_generator(seed, sid, batch.epoch, "corrupt")))
                 for sid in batch.sample_id]
        return Draw({"corruption_seed": seeds})

    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        """Only mDPO's corrupted image is drawn anew each epoch; every other need scores the same."""
        return f"terms:{CORRUPTED}" in needs

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """Summed response-token log-probs with per-token terms (see ``scoring``)."""
        return score(model, batch, frozenset(needs), packed=self.options.packed, condition=self._images(batch),
                     swap_images=lambda b, term: self._swapped_pixels(b, draw, term))

    def _images(self, batch: Batch) -> Condition:
        """The batch's images: cached features (packed path), else pixel values, made from the
        opened images once per batch when the features were cached but the naive path runs."""
        features = batch.inputs.get("image_features")
        if features is None:
            return pixel_condition(batch.inputs["pixel_values"], memo=batch.frozen)
        if self.options.packed:
            return feature_condition(features)
        if "pixel_values" not in batch.frozen:
            batch.frozen["pixel_values"] = self._pixels([i for row in batch.inputs["images"] for i in row])
        return pixel_condition(batch.frozen["pixel_values"], memo=batch.frozen)

    def _swapped_pixels(self, batch: Batch, draw: Draw, term: str) -> Tensor:
        """Pixel values of each row's corrupted (or retrieved) image, in row order; made once
        per batch and draw (``batch.frozen``), so the reference reuses the policy's."""
        key = f"pixel_values|{term}|{draw.get('corruption_seed')}"
        if key not in batch.frozen:
            rows = [self._swapped(batch, draw, term, b) for b in range(len(batch))]
            batch.frozen[key] = self._pixels([image for row in rows for image in row])
        return batch.frozen[key]

    def _swapped(self, batch: Batch, draw: Draw, term: str, row: int) -> list:
        """Row ``row``'s other image(s): given in the data, else (mDPO) a corruption of each of its images."""
        given = batch.inputs["rejected_image" if term == CORRUPTED else "retrieved_image"][row]
        if given is not None:
            return [given]
        where = batch.inputs["where"][row]
        if term != CORRUPTED:
            raise DataError(f"has no retrieved_image, which the objective's {term} term needs", file=where.file,
                            row=where.row, field="retrieved_image",
                            hint="Add a retrieved_image column (Re-Align) or choose another objective")
        if "corruption_seed" not in draw:
            raise ValueError("the draw has no corruption_seed; make it with this modality's draw()")
        generator = torch.Generator().manual_seed(draw["corruption_seed"][row])
        return [corrupt_image(image, generator, self.options.corruption, self.options.corruption_keep)
                for image in batch.inputs["images"][row]]

    # -- outputs --------------------------------------------------------------------------
    example = staticmethod(example)  # a tiny model and rows: ``mmalign check-plugin vision_language``

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """transformers ``save_pretrained`` (safetensors) or the peft adapter folder of a LoRA
        policy, the processor, and a README.md model card."""
        return export_pretrained(model, self.processor, out_dir, card)

    def sample(self, model: nn.Module, prompts: Sequence[dict[str, Any]], n: int = 1,
               seeds: int | Sequence[int] = 0, init: Any = None, strength: float | None = None) -> list[list[str]]:
        """``n`` answers per prompt (``{"prompt": text or messages, "images": [...]}``): greedy
        for ``n == 1``, sampled otherwise, prompt ``i`` from ``seeds[i]`` alone."""
        refuse_init(init, strength, "vision_language")
        return generate(model, self.processor, prompts, n=n, seeds=normalize_seeds(seeds, len(prompts)),
                        max_new_tokens=self.options.max_new_tokens, repairs=self.repairs)
