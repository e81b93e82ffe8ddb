"""The ``vision_language`` modality: preference alignment of LLaVA-style models.

The trainer drives it through the modality contract (``mmalign.modality``): load the policy
and its processor, load and validate records, collate, draw (the mDPO image corruption, the
only randomness), score, export, sample.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.errors import ConfigError, DataError
from mmalign.modalities.vision_language import records as _records
from mmalign.modalities.tokens.export import export_pretrained
from mmalign.modalities.vision_language.fields import changed_tokens, pad_rows, sentence_token_mask
from mmalign.modalities.vision_language.images import corrupt_image, open_image
from mmalign.modalities.vision_language.sampling import generate
from mmalign.modalities.vision_language.scoring import CORRUPTED, SUPPORTED_NEEDS, check_needs, score
from mmalign.modality import ModelSpec, row_generator
from mmalign.surrogate import Batch, Draw, Surrogate

#: LoRA on the language model's attention projections only; CLIP's vision tower also has
#: q_proj / k_proj / v_proj, so plain suffixes would adapt it too
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


class VisionLanguageModality:
    """LLaVA-style image-text models (``LlavaForConditionalGeneration``), scored per pair.

    Options (the recipe's ``model.options``):

    * ``max_length``: longest ``prompt + response`` in tokens; responses are truncated to fit,
      the prompt (with its image tokens) never is: a prompt that does not fit is a DataError.
    * ``packed``: score ``[prompt | chosen | rejected]`` as one sequence with a block mask, so
      images and prompt are encoded once per pair (default); ``False`` is the plain path.
    * ``corruption`` / ``corruption_keep``: how mDPO's corrupted image is drawn ("crop" keeps a
      random crop of area fraction in ``corruption_keep``; "mask" greys out the rest).
    * ``max_new_tokens``: generation length of :meth:`sample`.
    """

    supported_needs = SUPPORTED_NEEDS
    policy_dependent_draw = False

    def __init__(self, max_length: int | None = 2048, packed: bool = True, corruption: str = "crop",
                 corruption_keep: Sequence[float] = (0.05, 0.2), max_new_tokens: int = 64):
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ConfigError(f"model.options.max_length must be an integer >= 2 or null, got {max_length!r}")
        if corruption not in ("crop", "mask"):
            raise ConfigError(f"model.options.corruption must be 'crop' or 'mask', got {corruption!r}")
        keep = tuple(float(x) for x in corruption_keep)
        if len(keep) != 2 or not 0 < keep[0] <= keep[1] <= 1:
            raise ConfigError(f"model.options.corruption_keep must be [low, high] with 0 < low <= high <= 1, "
                              f"got {list(corruption_keep)!r}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ConfigError(f"model.options.max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        self.max_length, self.packed = max_length, bool(packed)
        self.corruption, self.corruption_keep, self.max_new_tokens = corruption, keep, max_new_tokens
        self.processor = None
        self._lora_targets: list[str] = []
        #: repairs made to the data (RGBA -> RGB, truncated responses), counted for the log
        self.repairs: Counter = Counter()

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
            parts.model.to(_dtype(spec.dtype))
        else:
            raise ConfigError(f"model.builder '{spec.builder}' is not a vision-language builder; "
                              f"use one of {', '.join(PARTS_BUILDERS)} or give model.path")
        self.processor = parts.processor
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
        encode = _records.encoder(self.processor, self.max_length, found) if self.processor is not None else None
        records = _records.load_records(path, schema, encode=encode, repairs=found, checks=checks)
        self.repairs.update(found)
        checks.counts.update(found)
        return records

    def check_record(self, record: dict[str, Any]) -> None:
        """Tokenise a record (its images opened, responses fitted to ``max_length``, repairs
        counted) once the processor is loaded: every row is checked before training."""
        if "prompt_ids" not in record:
            self._encoder()(record)

    def _encoder(self):
        return _records.encoder(self.processor, self.max_length, self.repairs)

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Token ids (ragged), pixel values of every image in row order, the images themselves
        (for mDPO's corruption) and the per-token fields."""
        encode = self._encoder()
        for record in records:
            if "prompt_ids" not in record:
                encode(record)
        images = [self._open_all(r) for r in records]
        inputs: dict[str, Any] = {
            "prompt_ids": [r["prompt_ids"] for r in records],
            "chosen_ids": [r["chosen_ids"] for r in records],
            "rejected_ids": [r["rejected_ids"] for r in records],
            "pad_id": self.processor.tokenizer.pad_token_id,
            "images": images,
            "pixel_values": self._pixels([img for row in images for img in row]),
            "where": [RowRef(r["file"], r["row"]) for r in records],
        }
        for key in ("rejected_image", "retrieved_image"):
            inputs[key] = [open_image(r[key], RowRef(r["file"], r["row"]), key) if key in r else None
                           for r in records]
        return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records], fields=_fields(records))

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

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """Summed response-token log-probs with per-token terms (see ``scoring``)."""
        return score(model, batch, frozenset(needs), packed=self.packed,
                     swap_images=lambda b, term: self._swapped_pixels(b, draw, term))

    def check_needs(self, needs: frozenset[str]) -> None:
        check_needs(frozenset(needs))

    def _swapped_pixels(self, batch: Batch, draw: Draw, term: str) -> Tensor:
        """Pixel values of each row's corrupted (or retrieved) image, in row order."""
        key = "rejected_image" if term == CORRUPTED else "retrieved_image"
        out = []
        for b, row_images in enumerate(batch.inputs["images"]):
            given = batch.inputs[key][b]
            if given is not None:
                out.append(given)
            elif term == CORRUPTED:
                if "corruption_seed" not in draw:
                    raise ValueError("the draw has no corruption_seed; make it with this modality's draw()")
                gen = torch.Generator().manual_seed(draw["corruption_seed"][b])
                out.extend(corrupt_image(img, gen, self.corruption, self.corruption_keep) for img in row_images)
            else:
                where = batch.inputs["where"][b]
                raise DataError("has no retrieved_image, which the objective's chosen|image=retrieved term "
                                "needs", file=where.file, row=where.row, field="retrieved_image",
                                hint="Add a retrieved_image column (Re-Align) or choose another objective")
        return self._pixels(out)

    # -- outputs --------------------------------------------------------------------------
    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """transformers ``save_pretrained`` (safetensors) or the peft adapter folder of a LoRA
        policy, the processor, and a README.md model card."""
        return export_pretrained(model, self.processor, out_dir, card)

    def sample(self, model: nn.Module, prompts: Sequence[dict[str, Any]], n: int = 1, seed: int = 0) -> list[list[str]]:
        """``n`` answers per prompt (``{"prompt": text or messages, "images": [...]}``): greedy
        for ``n == 1``, sampled from ``seed`` otherwise."""
        return generate(model, self.processor, prompts, n=n, seed=seed, max_new_tokens=self.max_new_tokens,
                        repairs=self.repairs)


def _fields(records: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """``chosen_changed`` / ``rejected_changed`` always; the Mask-DPO masks and ``margin`` when
    the data has them (rows without sentence labels count every response token)."""
    units = max(max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in records)
    diffs = [changed_tokens(r["chosen_ids"], r["rejected_ids"]) for r in records]
    fields = {"chosen_changed": pad_rows([d[0] for d in diffs], units),
              "rejected_changed": pad_rows([d[1] for d in diffs], units)}
    if any("chosen_spans" in r or "rejected_spans" in r for r in records):
        for side, keep in (("chosen", 1), ("rejected", 0)):
            rows = [sentence_token_mask(r[f"{side}_offsets"], r[f"{side}_spans"], keep)
                    if f"{side}_spans" in r else [True] * len(r[f"{side}_ids"]) for r in records]
            fields[f"{side}_token_mask"] = pad_rows(rows, units)
    if any("margin" in r for r in records):
        fields["margin"] = torch.tensor([float(r.get("margin", 0.0)) for r in records])
    return fields


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype):
        raise ConfigError(f"model.dtype '{name}' is not a torch dtype; use float32, bfloat16 or float16")
    return value
