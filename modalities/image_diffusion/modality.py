"""The image-diffusion modality: Diffusion-DPO and its family for SD 1.5 and SDXL UNets.

Wallace et al. 2023, Diffusion Model Alignment Using Direct Preference Optimization
(arXiv:2311.12908). A thin plugin on the denoising library (:mod:`mmalign.modalities.denoising`:
draws, targets, the per-sample surrogate, LoRA export) and the frozen-work cache
(:mod:`mmalign.modalities.frozen_cache`); what is SD's own lives here and beside it: the text
encoders and SDXL's added time ids (``encode.py``, ``conditioning.py``), the UNet forward
(``surrogate.py``), the pipelines (``sampling.py``).
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from mmalign.data.checks import RowChecks
from mmalign.errors import ConfigError
from mmalign.modality import ModelSpec, normalize_seeds
from mmalign.models import diffusion as builders
from mmalign.surrogate import Batch, Draw, Surrogate

from mmalign.modalities.image_diffusion.example import example
from mmalign.modalities.image_diffusion import batches, cache as diffusion_cache
from mmalign.modalities.image_diffusion import conditioning
from mmalign.modalities.image_diffusion.draw import DrawShape, forward_draw
from mmalign.modalities.image_diffusion.encode import Encoders, empty_prompt, is_truncated, sd_encoders
from mmalign.modalities.image_diffusion.export import export_unet
from mmalign.modalities.image_diffusion.inversion import grid_indices, inversion_draw
from mmalign.modalities.image_diffusion.options import DiffusionOptions, parse_options
from mmalign.modalities.image_diffusion.records import load_records
from mmalign.modalities.image_diffusion.sampling import Sampling, check_strength, sample_images, save_grid
from mmalign.modalities.image_diffusion.surrogate import diffusion_surrogate

logger = logging.getLogger("mmalign.image_diffusion")
BUILDERS = ("tiny_sd15", "tiny_sdxl")


class ImageDiffusionModality:
    """Text-to-image latent diffusion (``UNet2DConditionModel``), SD 1.5 or SDXL.

    Options: :class:`~mmalign.modalities.image_diffusion.options.DiffusionOptions` (``Options``).
    """

    Options = DiffusionOptions
    supported_needs = frozenset({"label", "terms:kl_mismatched"})
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, **options: Any):
        self.options = parse_options(options)
        self.policy_dependent_draw = self.options.draw == "inversion"
        self.parts: builders.DiffusionParts | None = None
        self.counts: Counter = Counter()
        self.spec: ModelSpec | None = None
        self._empty: dict[str, torch.Tensor] | None = None
        self.encoders: Encoders | None = None

    # -- model -------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """The trainable UNet; VAE, text encoders, tokenizers and scheduler stay on ``self.parts``.

        ``spec`` is kept (``self.spec``) so evaluators can reload the base UNet of a full
        fine-tune with :meth:`load_unet`."""
        unet = self.load_unet(spec)
        if spec.path:
            parts = builders.load_parts(spec.path, self.options.vae_path, spec.dtype)
        else:
            parts = getattr(builders, f"{spec.builder}_parts")(**spec.builder_args)
            for module in parts.frozen_modules():
                _cast(module, spec.dtype)
        for module in parts.frozen_modules():
            module.requires_grad_(False).eval()
        self.parts, self._empty, self.spec = parts, None, spec
        self.encoders = sd_encoders(parts)
        return unet

    def load_unet(self, spec: ModelSpec) -> nn.Module:
        """The UNet alone, as :meth:`load_policy` loads it (frozen parts untouched): a fresh
        base model for comparisons with a trained one."""
        if spec.path:
            return builders.load_unet(spec.path, spec.dtype)
        if spec.builder not in BUILDERS:
            raise ConfigError(f"model.builder {spec.builder!r} is not a diffusion builder; use one of "
                              f"{', '.join(BUILDERS)}, or give model.path (a local diffusers folder)")
        return _cast(getattr(builders, spec.builder)(**spec.builder_args), spec.dtype)

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

    pair_identical = staticmethod(batches.pair_identical)  # for the data checks

    def prepare(self, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
        """With ``cache: true``, encode every record once into ``cache_dir`` (see ``cache.py``)."""
        if not self.options.cache:
            logger.info("cache: false; the VAE and text encoders run at every step")
            return list(records)
        self._parts()
        return diffusion_cache.write_cache(list(records), cache_dir, self.encoders, self.options)

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        return batches.collate(records)

    # -- a step ------------------------------------------------------------------------
    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        """Timesteps and noise are drawn anew every epoch, whatever the needs."""
        return True

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
        frozen = self._frozen(batch, base, _device(model))
        indices = grid_indices(batch, seed, opts.inversion_steps)
        return inversion_draw(model, parts.scheduler, frozen, base, indices, opts.inversion_steps,
                              parts.vae.config.scaling_factor)

    def _frozen(self, batch: Batch, draw: Draw, device: torch.device | None = None) -> conditioning.Frozen:
        """The UNet's frozen inputs, kept in ``batch.frozen``: the pair's images and prompt are
        encoded once per step, for policy and reference (``conditioning.memoised``)."""
        def compute() -> conditioning.Frozen:
            if batch.inputs["cached"]:
                return conditioning.from_cache(batch.inputs, draw, batch.inputs["empty"])
            return conditioning.compute(self.encoders, batch.inputs, draw, self.options.resolution,
                                        self._empty_prompt())

        frozen = conditioning.memoised(batch, draw, compute)
        return frozen if device is None else frozen.to(device)

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """``-0.5 * mean((prediction - target)^2)`` per image (``surrogate.py``)."""
        if "label" in needs and "label" not in batch.fields:
            raise ConfigError("the objective needs labelled unpaired rows (need 'label'), but the data holds "
                              "pairs: set model.options.pairing: unpaired, or use the image_labels schema")
        parts = self._parts()
        device = _device(model)
        frozen = self._frozen(batch, draw, device)
        sur, _ = diffusion_surrogate(model, parts.scheduler, frozen, draw, parts.vae.config.scaling_factor,
                                     with_mismatched="terms:kl_mismatched" in needs)
        if "label" in batch.fields:
            sur.label = batch.fields["label"].to(device)
        return sur

    # -- outputs -----------------------------------------------------------------------
    example = staticmethod(example)  # a tiny model and rows: ``mmalign check-plugin image_diffusion``

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        return export_unet(model, out_dir, card)

    def load_export(self, out_dir: str, spec: ModelSpec) -> nn.Module:
        """The UNet a full fine-tune exported (``out_dir/unet``), with the frozen parts of the
        base model ``spec``: the export holds the UNet alone, as diffusers' training scripts write it."""
        self.load_policy(spec)
        return builders.load_unet(out_dir, spec.dtype)

    def sample(self, model: nn.Module, prompts: Sequence[str], n: int, seeds: int | Sequence[int],
               init: Sequence[Image.Image] | None = None, strength: float | None = None) -> list[list[Image.Image]]:
        """``n`` images per prompt, one list per prompt, through the diffusers pipeline (DDIM,
        ``sample_steps``, ``guidance_scale``); prompt ``i``'s images from ``seeds[i]`` alone.
        With ``init`` (one start image per prompt) and ``strength`` in (0, 1]: img2img, which
        noises the start image to ``strength`` of the schedule and denoises from there."""
        opts = self.options
        check_strength(init, strength, opts.sample_steps)
        how = Sampling(opts.resolution, opts.sample_steps, opts.guidance_scale)
        return sample_images(self._parts(), model, list(prompts), n, normalize_seeds(seeds, len(prompts)), how,
                             init, strength)

    def write_samples(self, model: nn.Module, prompts: list[str], seed: int, out_path: str) -> str:
        """One PNG grid: a row per prompt, ``samples_per_prompt`` columns, the same seed at
        every call, so grids written before, during and after training compare directly."""
        columns = self.options.samples_per_prompt
        rows = self.sample(model, prompts, columns, seed)
        return save_grid([image for row in rows for image in row], out_path, columns)


def _cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    # the builders make float32 weights; diffusers warns on any .to(dtype), even a no-op
    return module if dtype == torch.float32 else module.to(dtype)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
