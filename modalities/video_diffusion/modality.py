"""The video-diffusion modality: Diffusion-DPO and its family for text-to-video transformers,
Wan 2.1 (``WanTransformer3DModel``, flow matching) and CogVideoX
(``CogVideoXTransformer3DModel``, v-prediction).

A sibling of the image plugins on the same libraries: the denoising library
(:mod:`mmalign.modalities.denoising`: per-row draws, flow times and shifts, the flow and DDPM
targets, the per-sample surrogate, LoRA export), the frozen-work cache, and the image plugins'
``Encoders``, ``Frozen`` conditioning, caption dropout and batch fields. What is the video
models' own lives here: clips and their checks (``clips.py``, ``records.py``, ``schemas.py``),
the text encoders and the causal VAE through the pipeline (``encode.py``, ``cache.py``), the
latent layout each transformer takes (``layout.py``, declared in
:data:`mmalign.models.video_diffusion.KINDS`), the forwards (``forward.py``), the surrogate
(``surrogate.py``), VideoDPO's pair weights (``weighting.py``) and the pipelines
(``sampling.py``).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from mmalign.data.checks import RowChecks
from mmalign.errors import ConfigError
from mmalign.modality import ModelSpec, normalize_seeds
from mmalign.models import video_diffusion as builders
from mmalign.surrogate import Batch, Draw, Surrogate

from mmalign.modalities.denoising.draw import TimestepSampler, uniform_timestep
from mmalign.modalities.denoising.flow_time import flow_timestep_sampler
from mmalign.modalities.video_diffusion import batches, cache, conditioning
from mmalign.modalities.video_diffusion.draw import flow_shift_config, video_draw
from mmalign.modalities.video_diffusion.encode import is_truncated, normalisation, text_length, video_encoders
from mmalign.modalities.video_diffusion.example import example
from mmalign.modalities.video_diffusion.export import export_transformer
from mmalign.modalities.video_diffusion.options import VideoOptions, density, parse_options
from mmalign.modalities.video_diffusion.records import load_records
from mmalign.modalities.video_diffusion.sampling import VideoSampling, sample_videos, write_video_samples
from mmalign.modalities.video_diffusion.surrogate import video_surrogate

logger = logging.getLogger("mmalign.video_diffusion")
BUILDERS = {"tiny_wan": "wan", "tiny_cogvideox": "cogvideox"}
NAME = "video_diffusion"


class VideoDiffusionModality:
    """Text-to-video diffusion: Wan 2.1 or CogVideoX (options: :class:`VideoOptions`)."""

    Options = VideoOptions
    supported_needs: frozenset[str] = frozenset()
    policy_dependent_draw = False
    #: the attention projections (self- and cross-attention) both families' LoRA scripts adapt
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")
    pair_identical = staticmethod(batches.pair_identical)  # for the data checks

    def __init__(self, **options: Any):
        self.options = parse_options(options)
        self.parts: builders.VideoParts | None = None
        self.encoders = None
        self.text_tokens: int | None = None

    # -- model -------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """The trainable transformer; VAE, text encoder, tokenizer and scheduler stay on
        ``self.parts`` (the pipeline without its transformer)."""
        if spec.path:
            model = builders.load_transformer(spec.path, spec.dtype)
            parts = builders.load_video_parts(spec.path, spec.dtype)
        elif spec.builder in BUILDERS:
            model = _cast(getattr(builders, spec.builder)(**spec.builder_args), spec.dtype)
            parts = getattr(builders, f"{spec.builder}_parts")(**spec.builder_args)
            for module in parts.frozen_modules():
                _cast(module, spec.dtype)
        else:
            raise ConfigError(f"model.builder {spec.builder!r} is not a video-diffusion builder; use one of "
                              f"{', '.join(BUILDERS)}, or give model.path (a local WanPipeline or CogVideoXPipeline "
                              "diffusers folder)")
        _check_model(parts, model.config, self.options)
        for module in parts.frozen_modules():
            module.requires_grad_(False).eval()
        self.parts = parts
        self.text_tokens = text_length(parts, model.config, self.options.max_sequence_length)
        self.encoders = video_encoders(parts, self.text_tokens)
        return model

    def _parts(self) -> builders.VideoParts:
        if self.parts is None:
            raise ConfigError("the video_diffusion modality has no model yet: call load_policy first")
        return self.parts

    # -- data --------------------------------------------------------------------------
    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Validated records (``video_pairs`` by default): every clip read once and checked;
        captions the text encoder would cut are counted as repaired."""
        checks = checks or RowChecks()
        records = load_records(path, schema or "video_pairs", self.options, checks=checks)
        if self.parts is not None:
            cut = sum(is_truncated(self.parts, self.text_tokens, r["prompt"]) for r in records)
            if cut:
                checks.counts["repaired: caption truncated"] += cut
        return records

    def prepare(self, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
        """With ``cache: true``, encode every clip pair and caption once into ``cache_dir``."""
        self._parts()
        if not self.options.cache:
            logger.info("cache: false; the video VAE and the text encoder run at every step")
            return list(records)
        return cache.write_cache(list(records), cache_dir, self.encoders, self.options)

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        return batches.collate(records, self.options)

    # -- a step ------------------------------------------------------------------------
    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        """Times and noise are drawn anew every epoch, whatever the needs."""
        return True

    def latent_shape(self) -> tuple[int, int, int, int]:
        """``(C, T', H', W')`` of one training clip's latent."""
        parts, opts = self._parts(), self.options
        frames = builders.latent_frames(opts.num_frames, parts.temporal_factor)
        return (parts.latent_channels, frames, opts.height // parts.spatial_factor, opts.width // parts.spatial_factor)

    def time_sampler(self) -> TimestepSampler:
        """Wan: the options' density of flow times, then its scheduler's shift; CogVideoX:
        integer timesteps uniform over its training schedule."""
        parts = self._parts()
        if parts.kind == "wan":
            return flow_timestep_sampler(flow_shift_config(parts.scheduler.config), self.options.weighting_scheme,
                                         **density(self.options))
        return uniform_timestep(parts.scheduler.config.num_train_timesteps)

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """Per row: time, noise, latent sample, caption dropout."""
        return video_draw(batch, seed, self.latent_shape(), self.time_sampler(), self.options.caption_dropout)

    def _frozen(self, batch: Batch, draw: Draw, device: torch.device) -> conditioning.Frozen:
        """The transformer's frozen inputs, once per batch and draw (policy and reference share them)."""
        def compute() -> conditioning.Frozen:
            if batch.inputs["cached"]:
                return conditioning.from_cache(batch.inputs, draw)
            return conditioning.compute(self.encoders, batch.inputs, draw, self.encoders.empty())

        return conditioning.memoised(batch, draw, compute).to(device)

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """``-0.5 * mean((prediction - target)^2)`` per clip over all its latent's dims (``surrogate.py``)."""
        parts, device = self._parts(), next(model.parameters()).device
        for module in parts.frozen_modules():  # frozen parts follow the model's device
            if next(module.parameters()).device != device:
                module.to(device)
        sur, _ = video_surrogate(model, parts, self._frozen(batch, draw, device), draw, normalisation(parts))
        return sur

    # -- outputs -----------------------------------------------------------------------
    example = staticmethod(example)  # a tiny model and rows: ``mmalign check-plugin video_diffusion``

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        return export_transformer(model, self._parts().kind, out_dir, card)

    def load_export(self, out_dir: str, spec: ModelSpec) -> nn.Module:
        """The transformer a full fine-tune exported (``out_dir/transformer``), with the frozen
        parts of the base model ``spec``."""
        self.load_policy(spec)
        cls = builders.TRANSFORMERS[self._parts().kind]
        return cls.from_pretrained(out_dir, subfolder="transformer", torch_dtype=spec.dtype)

    def sample(self, model: nn.Module, prompts: Sequence[str], n: int, seeds: int | Sequence[int],
               init=None, strength: float | None = None) -> list[list[torch.Tensor]]:
        """``n`` clips (uint8 ``[T, H, W, 3]``) per prompt through the model's pipeline;
        prompt ``i``'s from ``seeds[i]`` alone."""
        if init is not None or strength is not None:
            raise ConfigError("video_diffusion samples text-to-video only: give no init clips or strength")
        opts = self.options
        how = VideoSampling(opts.height, opts.width, opts.num_frames, opts.sample_steps, opts.guidance_scale,
                            self.text_tokens)
        return sample_videos(self._parts(), model, list(prompts), n, normalize_seeds(seeds, len(prompts)), how)

    def write_samples(self, model: nn.Module, prompts: list[str], seed: int, out_path: str) -> str:
        """MP4, GIF and a PNG frame strip of one grid: a row per prompt, ``samples_per_prompt``
        columns, the same seed at every call; returns the PNG's path."""
        columns = self.options.samples_per_prompt
        rows = self.sample(model, prompts, columns, seed)
        fps = self.options.output_fps or self._parts().spec.fps
        return write_video_samples([clip for row in rows for clip in row], out_path, columns, fps)


def _check_model(parts: builders.VideoParts, config, options: VideoOptions) -> None:
    """Sizes the model cannot take, named before any step."""
    frames = builders.latent_frames(options.num_frames, parts.temporal_factor)
    patch_t = getattr(config, "patch_size_t", None)
    if patch_t and frames % patch_t:
        raise ConfigError(f"model.options.num_frames {options.num_frames} gives {frames} latent frames, which this "
                          f"transformer's temporal patches (patch_size_t={patch_t}) do not divide: choose num_frames "
                          f"so that (num_frames - 1) / {parts.temporal_factor} + 1 is a multiple of {patch_t}")
    for name in ("height", "width"):
        if getattr(options, name) % (parts.spatial_factor * 2):
            raise ConfigError(f"model.options.{name} {getattr(options, name)} is not a multiple of "
                              f"{parts.spatial_factor * 2} (the VAE's x{parts.spatial_factor} and the 2 x 2 patches)")
    if parts.kind == "wan" and getattr(parts.pipeline.config, "boundary_ratio", None) is not None:
        raise ConfigError("this Wan folder has two transformers (Wan 2.2 A14B, boundary_ratio); video_diffusion "
                          "trains single-transformer Wan models")


def _cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    # the builders make float32 weights; diffusers warns on any .to(dtype), even a no-op
    return module if dtype == torch.float32 else module.to(dtype)
