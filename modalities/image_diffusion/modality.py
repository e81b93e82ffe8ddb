"""The image-diffusion modality: Diffusion-DPO and its family for SD 1.5 and SDXL UNets.

Wallace et al. 2023, Diffusion Model Alignment Using Direct Preference Optimization
(arXiv:2311.12908). See ``surrogate.py`` for the surrogate and why ``beta`` keeps its meaning,
``draw.py`` for the shared randomness, ``cache.py`` for the frozen-work cache.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import torch
from torch import nn

from mmalign.data.checks import RowChecks
from mmalign.errors import ConfigError, DataError
from mmalign.modality import ModelSpec
from mmalign.models import diffusion as builders
from mmalign.surrogate import Batch, Draw, Surrogate

from mmalign.modalities.image_diffusion import cache as frozen_cache
from mmalign.modalities.image_diffusion import conditioning
from mmalign.modalities.image_diffusion.draw import DrawShape, forward_draw
from mmalign.modalities.image_diffusion.encode import empty_prompt, is_truncated
from mmalign.modalities.image_diffusion.export import export_unet
from mmalign.modalities.image_diffusion.images import RowRef, decode_rgb
from mmalign.modalities.image_diffusion.inversion import grid_indices, inversion_draw
from mmalign.modalities.image_diffusion.options import parse_options
from mmalign.modalities.image_diffusion.records import load_records
from mmalign.modalities.image_diffusion.sampling import sample_images, save_grid
from mmalign.modalities.image_diffusion.surrogate import diffusion_surrogate

logger = logging.getLogger("mmalign.image_diffusion")
BUILDERS = ("tiny_sd15", "tiny_sdxl")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ImageDiffusionModality:
    """Text-to-image latent diffusion (``UNet2DConditionModel``), SD 1.5 or SDXL.

    Options: see :class:`~mmalign.modalities.image_diffusion.options.DiffusionOptions`.
    """

    supported_needs = frozenset({"label", "terms:kl_mismatched"})
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, **options: Any):
        self.options = parse_options(options)
        self.policy_dependent_draw = self.options.draw == "inversion"
        self.parts: builders.DiffusionParts | None = None
        self.counts: Counter = Counter()
        self.spec: ModelSpec | None = None
        self._empty: dict[str, torch.Tensor] | None = None

    # -- model -------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """The trainable UNet; VAE, text encoders, tokenizers and scheduler stay on ``self.parts``.

        ``spec`` is kept (``self.spec``) so evaluators can reload the base UNet of a full
        fine-tune with :meth:`load_unet`."""
        dtype = _dtype(spec)
        unet = self.load_unet(spec)
        if spec.path:
            parts = builders.load_parts(spec.path, self.options.vae_path, dtype)
        else:
            parts = getattr(builders, f"{spec.builder}_parts")(**spec.builder_args)
            if dtype != torch.float32:  # the builders make float32 weights
                for module in parts.frozen_modules():
                    module.to(dtype)
        for module in parts.frozen_modules():
            module.requires_grad_(False).eval()
        self.parts, self._empty, self.spec = parts, None, spec
        return unet

    def load_unet(self, spec: ModelSpec) -> nn.Module:
        """The UNet alone, as :meth:`load_policy` loads it (frozen parts untouched): a fresh
        base model for comparisons with a trained one."""
        dtype = _dtype(spec)
        if spec.path:
            return builders.load_unet(spec.path, dtype)
        if spec.builder not in BUILDERS:
            raise ConfigError(f"model.builder {spec.builder!r} is not a diffusion builder; use one of "
                              f"{', '.join(BUILDERS)}, or give model.path (a local diffusers folder)")
        unet = getattr(builders, spec.builder)(**spec.builder_args)
        return unet.to(dtype) if dtype != torch.float32 else unet  # the builders make float32 weights

    def _parts(self) -> builders.DiffusionParts:
        if self.parts is None:
            raise ConfigError("the image_diffusion modality has no model yet: call load_policy first")
        return self.parts

    def _empty_prompt(self) -> dict[str, torch.Tensor]:
        if self._empty is None:
            self._empty = empty_prompt(self._parts())
        return self._empty

    # -- data --------------------------------------------------------------------------
    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Validated records; ties dropped (unless ``keep_ties``), empty captions refused
        (unless ``allow_empty_captions``); RGBA / grayscale and over-long captions repaired.
        Counted in ``self.counts`` and, for :func:`mmalign.data.checks.load_checked`, in
        ``checks.counts``; ``checks`` also says whether a bad row stops the run or is dropped."""
        checks = checks or RowChecks()
        tokenizer = self.parts.tokenizer if self.parts is not None else None
        records, counts = load_records(
            path, schema or "pickapic", self.options, checks=checks,
            count_truncated=(lambda p: is_truncated(tokenizer, p)) if tokenizer is not None else None)
        self.counts.update(counts)
        checks.counts.update(counts)
        return records

    @staticmethod
    def pair_identical(record: dict[str, Any]) -> bool:
        """A pair of two images with the same bytes prefers nothing (for the data checks)."""
        images = record.get("images") or []
        return len(images) == 2 and images[0] == images[1]

    def prepare(self, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
        """With ``cache: true``, encode every record once into ``cache_dir`` (see ``cache.py``)."""
        if not self.options.cache:
            logger.info("cache: false; the VAE and text encoders run at every step")
            return list(records)
        return frozen_cache.write_cache(list(records), cache_dir, self._parts(), self.options)

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        sides = {len(r["images"]) for r in records}
        if len(sides) != 1:
            raise DataError("a batch mixes paired and unpaired rows", file=records[0]["file"],
                            hint="Use one schema and one model.options.pairing per data file")
        inputs: dict[str, Any] = {"prompts": [r["prompt"] for r in records]}
        if all("cache_file" in r for r in records):
            inputs.update(frozen_cache.read_cached(list(records)), cached=True,
                          empty=frozen_cache.read_empty(records[0]["cache_file"]))
        else:
            inputs.update(cached=False, images=[
                [decode_rgb(data, RowRef(r["file"], r["row"]), "image")[0] for data in r["images"]] for r in records])
        fields = {"tie": torch.tensor([float(r.get("tie", False)) for r in records])}
        if sides == {1}:
            fields["label"] = torch.tensor([float(r["label"]) for r in records])
        return Batch(inputs=inputs, sample_id=[r["sample_id"] for r in records], fields=fields)

    # -- a step ------------------------------------------------------------------------
    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """Timesteps, noise, latent sample, caption dropout, crop and flip per row (``draw.py``);
        with ``draw: inversion``, ``x_t`` by DDIM inversion under ``model`` (``inversion.py``)."""
        parts, opts = self._parts(), self.options
        channels = parts.vae.config.latent_channels
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        side = opts.resolution // factor
        shape = DrawShape((channels, side, side), parts.scheduler.config.num_train_timesteps,
                          opts.caption_dropout, opts.random_flip, opts.crop == "random")
        base = forward_draw(batch, seed, shape)
        if opts.draw == "forward":
            return base
        if model is None:
            raise ConfigError("model.options.draw: inversion runs the policy in the draw; it cannot be used "
                              "with a precomputed reference")
        if shape.num_train_timesteps % opts.inversion_steps:
            # DDIMInverseScheduler steps from t - T // K: only a divisor K keeps that on the grid
            raise ConfigError(f"model.options.inversion_steps ({opts.inversion_steps}) must divide the "
                              f"scheduler's {shape.num_train_timesteps} training timesteps (e.g. 4, 5, 10, 20)")
        frozen = self._frozen(batch, base)
        indices = grid_indices(batch, seed, opts.inversion_steps)
        # the returned draw keeps base's values, the memoised frozen inputs included
        return inversion_draw(model, parts.scheduler, frozen, base, indices, opts.inversion_steps,
                              parts.vae.config.scaling_factor)

    def _frozen(self, batch: Batch, draw: Draw) -> conditioning.Frozen:
        # computed once per (batch, draw) and shared by policy and reference: the pair's
        # images and prompt are encoded once
        memo = draw.values.get("_frozen")
        if memo is not None and memo[0] is batch:
            return memo[1]
        if batch.inputs["cached"]:
            frozen = conditioning.from_cache(batch.inputs, draw, batch.inputs["empty"])
        else:
            frozen = conditioning.compute(self._parts(), batch.inputs, draw, self.options.resolution,
                                          self._empty_prompt())
        draw.values["_frozen"] = (batch, frozen)
        return frozen

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """``-0.5 * mean((prediction - target)^2)`` per image (``surrogate.py``)."""
        unknown = sorted(n for n in needs if n not in self.supported_needs and not n.startswith("fields:"))
        if unknown:
            raise ConfigError(f"the image_diffusion modality cannot provide {', '.join(unknown)}; "
                              f"it provides {', '.join(sorted(self.supported_needs))} and batch fields")
        parts = self._parts()
        device = next(model.parameters()).device
        frozen = _to(self._frozen(batch, draw), device)
        sur, _ = diffusion_surrogate(model, parts.scheduler, frozen, draw, parts.vae.config.scaling_factor,
                                     mismatched="terms:kl_mismatched" in needs)
        if "label" in batch.fields:
            sur.label = batch.fields["label"].to(device)
        return sur

    # -- outputs -----------------------------------------------------------------------
    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        return export_unet(model, out_dir, card)

    def sample(self, model: nn.Module, prompts: Sequence[str], n: int, seed: int) -> list:
        """``n`` images per prompt (prompt-major) through the diffusers pipeline, from ``seed``."""
        opts = self.options
        return sample_images(self._parts(), model, list(prompts), n, seed, opts.resolution, opts.sample_steps,
                             opts.guidance_scale)

    def write_samples(self, model: nn.Module, prompts: list[str], seed: int, out_path: str) -> str:
        """One PNG grid: a row per prompt, ``samples_per_prompt`` columns, the same seed at
        every call, so grids written before, during and after training compare directly."""
        columns = self.options.samples_per_prompt
        return save_grid(self.sample(model, prompts, columns, seed), out_path, columns)


def _to(frozen: conditioning.Frozen, device: torch.device) -> conditioning.Frozen:
    move = lambda t: t.to(device) if t is not None else None  # noqa: E731
    return conditioning.Frozen(move(frozen.mean), move(frozen.logvar), move(frozen.prompt_embeds),
                               move(frozen.pooled), move(frozen.time_ids))


def _dtype(spec: ModelSpec) -> torch.dtype:
    if spec.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {spec.dtype!r}")
    return DTYPES[spec.dtype]
