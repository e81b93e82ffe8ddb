"""The image-flow modality: Flow-DPO and its family for rectified-flow transformers, SD3 /
SD3.5 (``SD3Transformer2DModel``) and FLUX.1 (``FluxTransformer2DModel``).

A sibling of the image-diffusion plugin on the same libraries: the denoising library
(:mod:`mmalign.modalities.denoising`: per-row draws, the flow times and shifts of
``flow_time``, the flow target, the per-sample surrogate, LoRA export), and the image plugin's
records, batches, frozen-work cache and conditioning. What is the flow models' own lives here:
the text encoders through the pipeline (``encode.py``), the transformer forward of each model
(``forward.py``), the surrogate (``surrogate.py``), the pipelines (``sampling.py``).
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
from mmalign.models import flow as builders
from mmalign.surrogate import Batch, Draw, Surrogate

from mmalign.modalities.denoising.flow_time import flow_timestep_sampler
from mmalign.modalities.image_diffusion import batches, cache, conditioning
from mmalign.modalities.image_diffusion.draw import DrawShape, forward_draw
from mmalign.modalities.image_diffusion.records import load_records
from mmalign.modalities.image_diffusion.sampling import Sampling, save_grid
from mmalign.modalities.image_flow.encode import flow_encoders, is_truncated, t5_length
from mmalign.modalities.image_flow.example import example
from mmalign.modalities.image_flow.export import export_transformer
from mmalign.modalities.image_flow.options import FlowOptions, density, parse_options
from mmalign.modalities.image_flow.sampling import sample_images
from mmalign.modalities.image_flow.surrogate import flow_surrogate

logger = logging.getLogger("mmalign.image_flow")
BUILDERS = {"tiny_sd3": "sd3", "tiny_flux": "flux"}
NAME = "image_flow"


class ImageFlowModality:
    """Text-to-image rectified flow: SD3 / SD3.5 or FLUX.1 (options: :class:`FlowOptions`)."""

    Options = FlowOptions
    supported_needs = frozenset({"label"})
    policy_dependent_draw = False
    #: attention projections of the joint (image and text) stream, as diffusers' LoRA scripts
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                           "to_add_out")
    pair_identical = staticmethod(batches.pair_identical)  # for the data checks

    def __init__(self, **options: Any):
        self.options = parse_options(options)
        self.parts: builders.FlowParts | None = None
        self.encoders = None
        self.counts: Counter = Counter()

    # -- model -------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """The trainable transformer; VAE, text encoders, tokenizers and scheduler stay on
        ``self.parts`` (the pipeline without its transformer)."""
        if spec.path:
            model = builders.load_transformer(spec.path, spec.dtype)
            parts = builders.load_flow_parts(spec.path, self.options.vae_path, spec.dtype)
        elif spec.builder in BUILDERS:
            model = _cast(getattr(builders, spec.builder)(**spec.builder_args), spec.dtype)
            parts = getattr(builders, f"{spec.builder}_parts")(**spec.builder_args)
            for module in parts.frozen_modules():
                _cast(module, spec.dtype)
        else:
            raise ConfigError(f"model.builder {spec.builder!r} is not a flow builder; use one of "
                              f"{', '.join(BUILDERS)}, or give model.path (a local SD3 or FLUX diffusers folder)")
        for module in parts.frozen_modules():
            module.requires_grad_(False).eval()
        self.parts = parts
        self.encoders = flow_encoders(parts, self._t5_length())
        return model

    def _parts(self) -> builders.FlowParts:
        if self.parts is None:
            raise ConfigError("the image_flow modality has no model yet: call load_policy first")
        return self.parts

    def _t5_length(self) -> int:
        return t5_length(self._parts(), self.options.max_sequence_length)

    # -- data --------------------------------------------------------------------------
    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Validated records, as the image-diffusion plugin reads them (``pickapic`` by default);
        captions T5 would cut are counted as repaired."""
        checks = checks or RowChecks()
        truncated = None
        if self.parts is not None:
            length = self._t5_length()
            truncated = lambda prompt: is_truncated(self.parts, length, prompt)  # noqa: E731
        records, counts = load_records(path, schema or "pickapic", self.options, checks=checks,
                                       count_truncated=truncated)
        self.counts.update(counts)
        checks.counts.update(counts)
        return records

    def prepare(self, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
        """With ``cache: true``, encode every record once into ``cache_dir``."""
        self._parts()
        if not self.options.cache:
            logger.info("cache: false; the VAE and text encoders run at every step")
            return list(records)
        return cache.write_cache(list(records), cache_dir, self.encoders, self.options, name=NAME)

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        return batches.collate(records)

    # -- a step ------------------------------------------------------------------------
    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        """Times and noise are drawn anew every epoch, whatever the needs."""
        return True

    def draw_shape(self) -> DrawShape:
        """The latent grid and the time density: the options' density, then the shift the
        scheduler config names (static for SD3, from the packed sequence length for FLUX)."""
        parts, opts = self._parts(), self.options
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        side = opts.resolution // factor
        sampler = flow_timestep_sampler(parts.scheduler.config, opts.weighting_scheme,
                                        image_seq_len=(side // 2) ** 2, **density(opts))
        return DrawShape((parts.vae.config.latent_channels, side, side), parts.scheduler.config.num_train_timesteps,
                         opts.caption_dropout, opts.random_flip, opts.crop == "random", sample_t=sampler)

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """Per row: flow time ``t`` in (0, 1), noise, latent sample, caption dropout, flip, crop."""
        return forward_draw(batch, seed, self.draw_shape(), salt=NAME)

    def _frozen(self, batch: Batch, draw: Draw, device: torch.device) -> conditioning.Frozen:
        """The transformer's frozen inputs, once per batch and draw (policy and reference share them)."""
        def compute() -> conditioning.Frozen:
            if batch.inputs["cached"]:
                return conditioning.from_cache(batch.inputs, draw, batch.inputs["empty"])
            return conditioning.compute(self.encoders, batch.inputs, draw, self.options.resolution,
                                        self.encoders.empty())

        return conditioning.memoised(batch, draw, compute).to(device)

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """``-0.5 * mean((v_pred - (e - x_0))^2)`` per image (``surrogate.py``)."""
        if "label" in needs and "label" not in batch.fields:
            raise ConfigError("the objective needs labelled unpaired rows (need 'label'), but the data holds "
                              "pairs: set model.options.pairing: unpaired, or use the image_labels schema")
        parts, device = self._parts(), next(model.parameters()).device
        sur, _ = flow_surrogate(model, parts.kind, self._frozen(batch, draw, device), draw, parts.vae.config,
                                self.options.guidance)
        if "label" in batch.fields:
            sur.label = batch.fields["label"].to(device)
        return sur

    # -- outputs -----------------------------------------------------------------------
    example = staticmethod(example)  # a tiny model and rows: ``mmalign check-plugin image_flow``

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        return export_transformer(model, self._parts().kind, out_dir, card)

    def load_export(self, out_dir: str, spec: ModelSpec) -> nn.Module:
        """The transformer a full fine-tune exported (``out_dir/transformer``), with the frozen
        parts of the base model ``spec``."""
        self.load_policy(spec)
        cls = builders.TRANSFORMERS[self._parts().kind]
        return cls.from_pretrained(out_dir, subfolder="transformer", torch_dtype=spec.dtype)

    def sample(self, model: nn.Module, prompts: Sequence[str], n: int, seeds: int | Sequence[int],
               init: Sequence[Image.Image] | None = None, strength: float | None = None) -> list[list[Image.Image]]:
        """``n`` images per prompt through the model's pipeline (flow-matching Euler,
        ``sample_steps``, ``guidance_scale``); prompt ``i``'s images from ``seeds[i]`` alone."""
        if init is not None or strength is not None:
            raise ConfigError("image_flow samples text-to-image only: give no init images or strength")
        opts = self.options
        how = Sampling(opts.resolution, opts.sample_steps, opts.guidance_scale)
        return sample_images(self._parts(), model, list(prompts), n, normalize_seeds(seeds, len(prompts)), how,
                             self._t5_length())

    def write_samples(self, model: nn.Module, prompts: list[str], seed: int, out_path: str) -> str:
        """One PNG grid: a row per prompt, ``samples_per_prompt`` columns, the same seed at every call."""
        columns = self.options.samples_per_prompt
        rows = self.sample(model, prompts, columns, seed)
        return save_grid([image for row in rows for image in row], out_path, columns)


def _cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    # the builders make float32 weights; diffusers warns on any .to(dtype), even a no-op
    return module if dtype == torch.float32 else module.to(dtype)
