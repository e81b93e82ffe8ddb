"""The ``vision_language`` modality: preference alignment of image- and video-language models
(LLaVA, LLaVA-NeXT-Video, Qwen2-VL / Qwen2.5-VL).

The trainer drives it through the modality contract (``mmalign.modality``): load the policy
and its processor, load and validate records, collate, draw (the mDPO image corruption, the
only randomness), score, export, sample. Scoring, truncation, fields and export come from
:mod:`mmalign.modalities.tokens`; what is left here is about images and clips.

Video-language models live here, not in a sibling plugin: a clip reaches the model the way an
image does (the processor expands a placeholder into tokens, the vision tower fills them), so
records, encoding, packing, the feature cache and the mDPO swap are the same code for both;
only reading the file differs (:mod:`.media`).
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any, Literal, Sequence

import torch
from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator
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
from mmalign.modalities.vision_language import feature_cache, swap
from mmalign.modalities.vision_language import records as _records
from mmalign.modalities.vision_language.clip_perturb import corrupt_sound, perturb
from mmalign.modalities.vision_language.images import corrupt_image, open_image
from mmalign.modalities.vision_language.media import (Media, Sampling, audio_rate, media_inputs, open_audio,
                                                      open_clip, open_media, pixel_budget_processor,
                                                      set_pixel_budget)
from mmalign.modalities.vision_language.sampling import generate
from mmalign.modalities.vision_language.vision import vision_frozen
from mmalign.modalities.tokens.records import is_paired, mismatched
from mmalign.modalities.vision_language.scoring import (SUPPORTED_NEEDS, UNPAIRED_NEEDS, feature_condition,
                                                        pixel_condition, score, score_unpaired)
from mmalign.modality import ModelSpec, normalize_seeds, row_generator
from mmalign.objectives.conditional import CORRUPTED
from mmalign.surrogate import Batch, Draw, Surrogate

log = logging.getLogger("mmalign")

#: LoRA on the language model's attention projections only; CLIP's vision tower also has
#: q_proj / k_proj / v_proj, so plain suffixes would adapt it too
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"
#: the modules with tiny builders of this modality's model families
BUILDER_MODULES = ("llava", "qwen_vl", "llava_next_video", "qwen2_audio")


class VisionLanguageOptions(TokenOptions):
    """:class:`~mmalign.modalities.tokens.options.TokenOptions` with vision-language defaults
    (``max_length`` 2048, ``keep_start`` truncation, ``packed``: images and prompt encoded once
    per pair), and:

    * ``corruption`` / ``corruption_keep``: how mDPO's corrupted image is drawn ("crop" keeps a
      random crop of area fraction in ``corruption_keep``; "mask" greys out the rest);
    * ``video_corruption``: how mDPO's corrupted clip is drawn when a row gives no
      ``rejected_video``: its frames shuffled, half of them dropped (held), or reversed
      (:mod:`.clip_perturb`);
    * ``audio_corruption``: mDPO's corrupted sound when a row gives no ``rejected_audio``: half
      of its 8 spans silenced (``mask``), or the spans reordered (``shuffle``);
    * ``video_frames`` / ``video_fps``: a clip is read as that many uniform frames, or (when
      ``video_fps`` is set) one frame every ``1 / video_fps`` seconds;
    * ``audio_seconds``: a sound is cut to its first ``audio_seconds`` (Qwen2-Audio reads 30 s);
    * ``pixel_budget``: ``[min_pixels, max_pixels]`` per image or frame for processors that
      resize to a pixel budget (Qwen2-VL / Qwen2.5-VL): a small image is not upscaled into
      hundreds of tokens, a large one not kept at full size;
    * ``cache_vision_features`` (also spelled ``cache_image_features``): compute each image's
      and clip's projected features once, in ``prepare``, when the vision side is frozen
      (:mod:`.feature_cache`).
    """

    max_length: StrictInt | None = Field(2048, ge=2)
    truncation: Literal["keep_end", "keep_start"] = "keep_start"
    packed: StrictBool = True
    max_new_tokens: StrictInt = Field(64, ge=1)
    corruption: Literal["crop", "mask"] = "crop"
    corruption_keep: tuple[float, float] = (0.05, 0.2)
    video_corruption: Literal["shuffle", "drop", "reverse"] = "shuffle"
    audio_corruption: Literal["mask", "shuffle"] = "mask"
    video_frames: StrictInt = Field(8, ge=1)
    audio_seconds: float = Field(30.0, gt=0)
    video_fps: float | None = Field(None, gt=0)
    pixel_budget: tuple[StrictInt, StrictInt] | None = None
    cache_vision_features: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _old_cache_name(cls, values: Any) -> Any:
        if isinstance(values, dict) and "cache_image_features" in values:
            values = dict(values)
            values.setdefault("cache_vision_features", values.pop("cache_image_features"))
        return values

    @field_validator("pixel_budget")
    @classmethod
    def _budget_range(cls, budget: tuple[int, int] | None) -> tuple[int, int] | None:
        if budget is not None and not 0 < budget[0] <= budget[1]:
            raise ValueError("must be [min_pixels, max_pixels] with 0 < min_pixels <= max_pixels")
        return budget

    @property
    def sampling(self) -> Sampling:
        frames = (None, self.video_fps) if self.video_fps else (self.video_frames, None)
        return Sampling(*frames, audio_seconds=self.audio_seconds)

    @field_validator("corruption_keep")
    @classmethod
    def _fraction_range(cls, keep: tuple[float, float]) -> tuple[float, float]:
        if not 0 < keep[0] <= keep[1] <= 1:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1")
        return keep


class VisionLanguageModality:
    """Image- and video-language models (``LlavaForConditionalGeneration``,
    ``LlavaNextVideoForConditionalGeneration``, ``Qwen2VLForConditionalGeneration``,
    ``Qwen2_5_VLForConditionalGeneration``), scored per pair (options: :class:`VisionLanguageOptions`)."""

    Options = VisionLanguageOptions
    name = "vision_language"
    supported_needs = SUPPORTED_NEEDS
    policy_dependent_draw = False

    def __init__(self, **options: Any):
        self.options = parse_options(self.Options, options, self.name)
        self.processor = None
        self.policy: nn.Module | None = None  # for prepare(): its frozen vision side
        self._lora_targets: list[str] = []
        #: repairs made to the data (RGBA -> RGB, truncated responses), counted for the log
        self.repairs: Counter = Counter()

    @property
    def sampling(self) -> Sampling:
        """How clips and sounds are read; sounds at the loaded processor's rate."""
        return self.options.sampling._replace(audio_rate=audio_rate(self.processor))

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
        """The model from ``spec.path`` (a local folder: any image-text-to-text checkpoint with
        its processor) or a tiny builder; the processor is kept on ``self``."""
        import importlib

        from mmalign.models.llava import load_llava

        builders = {name: fn for module in BUILDER_MODULES
                    for name, fn in importlib.import_module(f"mmalign.models.{module}").PARTS_BUILDERS.items()}
        if spec.path:
            parts = load_llava(spec.path, spec.dtype)
        elif spec.builder in builders:
            try:
                parts = builders[spec.builder](**(spec.builder_args or {}))
            except TypeError as exc:
                raise ConfigError(f"model.builder_args for '{spec.builder}': {exc}") from exc
            parts.model.to(spec.dtype)
        else:
            raise ConfigError(f"model.builder '{spec.builder}' is not a vision-language builder; "
                              f"use one of {', '.join(builders)} or give model.path")
        self.processor, self.policy = parts.processor, parts.model
        if self.options.pixel_budget is not None:
            set_pixel_budget(self.processor, *self.options.pixel_budget)
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
        records = _records.load_records(path, schema, encode=encode, repairs=found, checks=checks,
                                        sampling=self.sampling)
        self.repairs.update(found)
        checks.counts.update(found)
        return records

    def check_record(self, record: dict[str, Any]) -> None:
        """Tokenise a record (its images and clips opened, responses fitted to ``max_length``,
        repairs counted) once the processor is loaded: every row is checked before training."""
        if "prompt_ids" not in record:
            self._encoder(self.repairs)(record)

    def _encoder(self, repairs: Counter):
        return _records.encoder(self.processor, self.options.max_length, repairs, self.options.truncation,
                                self.sampling)

    def prepare(self, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
        """With ``cache_vision_features``, each row's image and clip features computed once
        (:mod:`.feature_cache`), when the policy's vision side is frozen; else the records as they are."""
        if not self.options.cache_vision_features or self.policy is None:
            return records
        if not vision_frozen(self.policy):
            log.warning("vision_language: cache_vision_features is off for this run: the vision tower or "
                        "projector trains (or has an adapter), so its features change")
            return records
        for record in records:
            self.check_record(record)
        return feature_cache.cache_features(self.policy, self.processor, records, cache_dir, self.sampling)

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Token ids (ragged), the processor's inputs of every image and clip in row order (or
        their cached features), the opened media (for mDPO's swap) and the per-row and
        per-token fields. Clips are decoded only when their features are not cached."""
        for record in records:
            self.check_record(record)
        features = feature_cache.cached_features(list(records))
        media = [self._open(r, clips=features is None) for r in records]
        texts = [r["prompt_text"] for r in records]
        paired = is_paired(records)
        inputs: dict[str, Any] = {
            "paired": paired,
            "prompt_ids": [r["prompt_ids"] for r in records],
            **(self._pair_ids(records) if paired else self._unpaired_ids(records)),
            "pad_id": self.processor.tokenizer.pad_token_id,
            "texts": texts,
            "images": [m.images for m in media],
            "media_features": features,
            "media": None if features is not None else media_inputs(self.processor, texts, media),
            "where": [RowRef(r["file"], r["row"]) for r in records],
            "records": list(records),
        }
        for key in _records.EXTRA_IMAGES:
            inputs[key] = [open_image(r[key], RowRef(r["file"], r["row"]), key) if key in r else None
                           for r in records]
        for key in (*_records.EXTRA_VIDEOS, *_records.EXTRA_AUDIOS):  # opened when a term asks for them
            inputs[key] = [r.get(key) for r in records]
        return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records],
                     fields={**(pair_fields(records) if paired else {}), **row_fields(records)})

    @staticmethod
    def _pair_ids(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {"chosen_ids": [r["chosen_ids"] for r in records], "rejected_ids": [r["rejected_ids"] for r in records]}

    def _unpaired_ids(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Completions, labels, and KTO's mismatched completions (the next row's), each cut
        to the room its prompt leaves."""
        room = [None if self.options.max_length is None else self.options.max_length - len(r["prompt_ids"])
                for r in records]
        return {"completion_ids": [r["completion_ids"] for r in records],
                "mismatched_ids": [ids[:n] for ids, n in zip(mismatched(records, "completion_ids"), room)],
                "label": torch.tensor([r["label"] for r in records])}

    def _open(self, record: dict[str, Any], clips: bool = True) -> Media:
        """The record's media; with ``clips`` false (their features are cached) clips and sounds stay unread."""
        if not clips:
            return Media(open_media({**record, "videos": [], "audios": []}, self.sampling, self.repairs).images, [])
        return open_media(record, self.sampling, self.repairs)

    def stats(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Images, clips and sounds, and the tokens each becomes (``mmalign data stats``): the memory
        a recipe needs grows with them."""
        from mmalign.modalities.vision_language.stats import media_token_stats

        return media_token_stats(list(records), *(getattr(self.processor, f"{kind}_token_id", None)
                                                  for kind in ("image", "video", "audio")))

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
        if not batch.inputs["paired"]:
            return score_unpaired(model, batch, frozenset(needs), self._media_condition(batch))
        if needs & UNPAIRED_NEEDS:
            raise ConfigError(f"the objective needs {', '.join(sorted(needs & UNPAIRED_NEEDS))}, which only "
                              "unpaired rows have; use an unpaired schema (video_unpaired: completion and label)")
        return score(model, batch, frozenset(needs), packed=self.options.packed, condition=self._condition(batch),
                     swap_images=lambda b, term: self._swapped_media(b, draw, term))

    def _condition(self, batch: Batch) -> Condition:
        """The batch's media: cached features (packed path), else the processor's inputs, made
        from the opened media once per batch when the features were cached but the naive path runs."""
        cached = batch.inputs.get("media_features")
        if cached is None:
            return pixel_condition(batch.inputs["media"], memo=batch.frozen)
        if self.options.packed:
            return feature_condition(*cached)
        return self._media_condition(batch)

    def _media_condition(self, batch: Batch) -> Condition:
        """The processor's inputs of the batch's media, made from the opened media once per
        batch when only their cached features were collated (the naive path reads pixels)."""
        if batch.inputs.get("media_features") is None:
            return pixel_condition(batch.inputs["media"], memo=batch.frozen)
        if "media" not in batch.frozen:
            batch.frozen["media"] = media_inputs(self.processor, batch.inputs["texts"],
                                                 [self._open(r) for r in batch.inputs["records"]])
        return pixel_condition(batch.frozen["media"], memo=batch.frozen)

    def _swapped_media(self, batch: Batch, draw: Draw, term: str) -> dict[str, Tensor]:
        """The processor's inputs with each row's image or clip swapped for its corrupted (or
        retrieved, or given rejected) one, in row order; made once per batch and draw
        (``batch.frozen``), so the reference reuses the policy's."""
        key = f"media|{term}|{draw.get('corruption_seed')}"
        if key not in batch.frozen:
            rows = [self._swapped(batch, draw, term, b) for b in range(len(batch))]
            batch.frozen[key] = media_inputs(self.processor, batch.inputs["texts"], rows)
        return batch.frozen[key]

    def _swapped(self, batch: Batch, draw: Draw, term: str, row: int) -> Media:
        """Row ``row``'s other medium: given in the data, else (mDPO) a corruption of each of its
        images, or of its clips' frame order. Under a pixel-budget processor it is brought to the original's size, so it
        becomes as many tokens as the prompt holds."""
        original = self._open(batch.inputs["records"][row])
        where = batch.inputs["where"][row]
        if term == CORRUPTED and batch.inputs["rejected_audio"][row] is not None:
            sound = open_audio(batch.inputs["rejected_audio"][row], where, "rejected_audio", self.sampling)
            return Media([], [], (swap.fitted_sound(sound, original.audios[0]),))
        if term == CORRUPTED and batch.inputs["rejected_video"][row] is not None:
            clip = open_clip(batch.inputs["rejected_video"][row], where, "rejected_video", self.sampling)
            return Media([], [swap.resized_clip(clip, original.clips[0], where)])
        given = batch.inputs["rejected_image" if term == CORRUPTED else "retrieved_image"][row]
        if given is not None:
            return Media([swap.fit_image(given, original.images[0], self._dynamic())], original.clips)
        if term != CORRUPTED:
            raise DataError(f"has no retrieved_image, which the objective's {term} term needs", file=where.file,
                            row=where.row, field="retrieved_image",
                            hint="Add a retrieved_image column (Re-Align) or choose another objective")
        if "corruption_seed" not in draw:
            raise ValueError("the draw has no corruption_seed; make it with this modality's draw()")
        generator = torch.Generator().manual_seed(draw["corruption_seed"][row])
        if original.clips or original.audios:  # the temporal evidence destroyed, the size kept
            return Media(original.images, [clip._replace(frames=perturb(clip.frames, self.options.video_corruption,
                                                                        generator)) for clip in original.clips],
                         tuple(corrupt_sound(wave, self.options.audio_corruption, generator)
                               for wave in original.audios))
        corrupted = [corrupt_image(image, generator, self.options.corruption, self.options.corruption_keep)
                     for image in original.images]
        return Media([swap.fit_image(c, o, self._dynamic()) for c, o in zip(corrupted, original.images)], [])

    def _dynamic(self) -> bool:
        """Whether the processor's token count follows the image size (a pixel budget, Qwen2-VL)."""
        return pixel_budget_processor(self.processor)

    # -- outputs --------------------------------------------------------------------------
    example = staticmethod(example)  # a tiny model and rows: ``mmalign check-plugin vision_language``

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """transformers ``save_pretrained`` (safetensors) or the peft adapter folder of a LoRA
        policy (with ``export_merged``, the merged model too, in ``merged/``), the processor,
        and a README.md model card."""
        return export_pretrained(model, self.processor, out_dir, card, merged=self.options.export_merged)

    def sample(self, model: nn.Module, prompts: Sequence[dict[str, Any]], n: int = 1,
               seeds: int | Sequence[int] = 0, init: Any = None, strength: float | None = None) -> list[list[str]]:
        """``n`` answers per prompt (``{"prompt": text or messages, "images": [...], "videos": [...]}``): greedy
        for ``n == 1``, sampled otherwise, prompt ``i`` from ``seeds[i]`` alone."""
        refuse_init(init, strength, self.name)
        return generate(model, self.processor, prompts, n=n, seeds=normalize_seeds(seeds, len(prompts)),
                        max_new_tokens=self.options.max_new_tokens, repairs=self.repairs,
                        sampling=self.sampling)
