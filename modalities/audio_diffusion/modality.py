"""The audio-diffusion modality: Diffusion-DPO and its family for text-to-audio models of two
forms, ACE-Step (``AceStepTransformer1DModel``, flow matching) and Tango 2's
(``UNet2DConditionModel`` over AudioLDM's mel VAE, DDPM v-prediction).

A sibling of the image and video plugins on the same libraries: the denoising library (per-row
draws, flow times, targets, the per-sample surrogate, LoRA export), the frozen-work cache, the
image plugins' conditioning memo and batch fields, their flow and DDPM noising. What is audio's
own: clips and their checks (:mod:`mmalign.modalities.audio_io`, ``records.py``, ``schemas.py``,
``pairs.py``), the encoders through each form (``encode.py``, ``cache.py``), conditioning of
each caption's own length (``conditioning.py``, ``forward.py``), sampling (``sampling.py``).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from mmalign.data.checks import RowChecks
from mmalign.errors import ConfigError
from mmalign.modality import ModelSpec, normalize_seeds
from mmalign.models import audio_diffusion as builders
from mmalign.surrogate import Batch, Draw, Surrogate

from mmalign.modalities.audio_diffusion import batches, cache, conditioning
from mmalign.modalities.audio_diffusion.encode import condition, empty_condition, mel_frames, posterior
from mmalign.modalities.audio_diffusion.example import example
from mmalign.modalities.audio_diffusion.export import export_audio_denoiser
from mmalign.modalities.audio_diffusion.options import AudioOptions, density, parse_options
from mmalign.modalities.audio_diffusion.records import load_records, record_waves
from mmalign.modalities.audio_diffusion.sampling import sample_ace, sample_tango, write_audio_samples
from mmalign.modalities.audio_diffusion.surrogate import audio_surrogate
from mmalign.modalities.denoising.draw import TimestepSampler, uniform_timestep
from mmalign.modalities.denoising.flow_time import flow_timestep_sampler
from mmalign.modalities.video_diffusion.draw import video_draw

logger = logging.getLogger("mmalign.audio_diffusion")
BUILDERS = {"tiny_ace_step": "ace_step", "tiny_tango": "tango"}


class AudioDiffusionModality:
    """Text-to-audio diffusion: ACE-Step or Tango 2's form (options: :class:`AudioOptions`)."""

    Options = AudioOptions
    supported_needs: frozenset[str] = frozenset()
    policy_dependent_draw = False
    #: attention projections: ACE-Step's self- and cross-attention, the UNet's (as SD LoRA)
    lora_target_modules = ("to_q", "to_k", "to_v", "to_out.0")
    pair_identical = staticmethod(batches.pair_identical)

    def __init__(self, **options: Any):
        self.options = parse_options(options)
        self.parts: builders.AudioParts | None = None
        self.model_config = None
        self._ace_frames: int | None = None

    # -- model -------------------------------------------------------------------------
    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """The trainable DiT / UNet; everything else stays on ``self.parts``."""
        if spec.path:
            model = builders.load_denoiser(spec.path, spec.dtype)
            parts = builders.load_audio_parts(spec.path, spec.dtype)
        elif spec.builder in BUILDERS:
            model = _cast(getattr(builders, spec.builder)(**spec.builder_args), spec.dtype)
            parts = getattr(builders, f"{spec.builder}_parts")(**spec.builder_args)
            for module in parts.sampling_modules():
                _cast(module, spec.dtype)
        else:
            raise ConfigError(f"model.builder {spec.builder!r} is not an audio-diffusion builder; use one of "
                              f"{', '.join(BUILDERS)}, or give model.path (a local AceStepPipeline folder or a "
                              "Tango-form folder)")
        for module in parts.sampling_modules():
            module.requires_grad_(False).eval()
        self.parts, self.model_config = parts, model.config
        return model

    def _parts(self) -> builders.AudioParts:
        if self.parts is None:
            raise ConfigError("the audio_diffusion modality has no model yet: call load_policy first")
        return self.parts

    def _frames(self) -> int | None:
        """Tango: mel frames per clip (a multiple of the VAE's and the UNet's downsampling)."""
        parts = self._parts()
        if parts.kind != "tango":
            return None
        multiple = 2 ** (len(parts.vae.config.block_out_channels) - 1) * 2 ** (len(self.model_config.block_out_channels) - 1)
        return mel_frames(parts, self.options.seconds, multiple)

    # -- data --------------------------------------------------------------------------
    def load_records(self, path: str, schema: str | None = None, *,
                     checks: RowChecks | None = None) -> list[dict[str, Any]]:
        """Validated pair records (``audio_pairs`` by default; ``audio_ranked`` rows paired)."""
        return load_records(path, schema or "audio_pairs", self.options, checks=checks or RowChecks())

    def prepare(self, records: list[dict[str, Any]], cache_dir: str) -> list[dict[str, Any]]:
        """With ``cache: true``, encode every clip pair and caption once into ``cache_dir``."""
        self._parts()
        if not self.options.cache:
            return list(records)
        return cache.write_cache(list(records), cache_dir, self.parts, self.options, self._frames())

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        return batches.collate(records)

    # -- a step ------------------------------------------------------------------------
    def draws_per_epoch(self, needs: frozenset[str]) -> bool:
        return True

    def latent_shape(self) -> tuple[int, ...]:
        """One clip's latent: ACE-Step ``(T, C)``, Tango ``(C, f, m)``."""
        parts = self._parts()
        if parts.kind == "ace_step":
            if self._ace_frames is None:  # the Oobleck encoder's strided convs decide it: run it once
                samples = round(self.options.seconds * parts.sample_rate)
                self._ace_frames = posterior(parts, torch.zeros(1, parts.channels, samples))[0].shape[1]
            return (self._ace_frames, parts.vae.config.decoder_input_channels)
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        return (parts.vae.config.latent_channels, self._frames() // factor, parts.mel["n_mels"] // factor)

    def time_sampler(self) -> TimestepSampler:
        """ACE-Step: the options' flow-time density (its scheduler config has no shift);
        Tango: integer steps uniform over its DDPM schedule."""
        parts = self._parts()
        if parts.kind == "ace_step":
            return flow_timestep_sampler(parts.scheduler.config, self.options.weighting_scheme,
                                         **density(self.options))
        return uniform_timestep(parts.scheduler.config.num_train_timesteps)

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """Per row: time, noise, latent sample, caption dropout (the video plugin's draw)."""
        return video_draw(batch, seed, self.latent_shape(), self.time_sampler(), self.options.caption_dropout)

    def _frozen(self, batch: Batch, draw: Draw, device: torch.device) -> conditioning.AudioFrozen:
        parts, opts = self._parts(), self.options

        def compute() -> conditioning.AudioFrozen:
            inputs = batch.inputs
            if inputs["cached"]:
                frozen = conditioning.AudioFrozen(inputs["mean"], inputs["logvar"], inputs["prompt_embeds"],
                                                  inputs["lengths"])
                empty = inputs["empty"]
            else:
                frozen = self._encode(inputs["records"])
                empty = empty_condition(parts, opts.max_sequence_length)
            return conditioning.apply_dropout(frozen, draw["drop"], empty, parts.kind == "ace_step")

        return conditioning.memoised(batch, draw, compute).to(device)

    def _encode(self, records: list[dict]) -> conditioning.AudioFrozen:
        parts, opts = self._parts(), self.options
        waves = torch.stack([record_waves(r, parts.sample_rate, parts.channels, opts) for r in records])
        mean, logvar = posterior(parts, waves.flatten(0, 1), self._frames())
        embeds, lengths = conditioning.pad([condition(parts, r["prompt"], r.get("lyrics", ""), opts.seconds,
                                                      opts.max_sequence_length) for r in records])
        lead = waves.shape[:2]
        return conditioning.AudioFrozen(mean.unflatten(0, lead), logvar.unflatten(0, lead), embeds, lengths)

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """``-0.5 * mean((prediction - target)^2)`` per clip (``surrogate.py``)."""
        parts, device = self._parts(), next(model.parameters()).device
        for module in parts.sampling_modules():
            if next(module.parameters()).device != device:
                module.to(device)
        sur, _ = audio_surrogate(model, parts, self._frozen(batch, draw, device), draw)
        return sur

    # -- outputs -----------------------------------------------------------------------
    example = staticmethod(example)

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        return export_audio_denoiser(model, self._parts().kind, out_dir, card)

    def load_export(self, out_dir: str, spec: ModelSpec) -> nn.Module:
        """The denoiser a full fine-tune exported, with the frozen parts of ``spec``."""
        self.load_policy(spec)
        cls, sub = ((builders.AceStepTransformer1DModel, "transformer") if self.parts.kind == "ace_step"
                    else (builders.UNet2DConditionModel, "unet"))
        return cls.from_pretrained(out_dir, subfolder=sub, torch_dtype=spec.dtype)

    def sample(self, model: nn.Module, prompts: Sequence[str], n: int, seeds: int | Sequence[int],
               init=None, strength: float | None = None, lyrics: Sequence[str] | None = None) -> list[list[torch.Tensor]]:
        """``n`` waves ``[channels, samples]`` per prompt; prompt ``i``'s from ``seeds[i]`` alone."""
        if init is not None or strength is not None:
            raise ConfigError("audio_diffusion samples text-to-audio only: give no init clips or strength")
        parts, opts, seeds = self._parts(), self.options, normalize_seeds(seeds, len(prompts))
        if parts.kind == "ace_step":
            waves = sample_ace(parts, model, prompts, lyrics or [""] * len(prompts), n, seeds, opts.seconds,
                               opts.sample_steps, opts.guidance_scale)
        else:
            waves = sample_tango(parts, model, prompts, n, seeds, self.latent_shape(), opts.sample_steps,
                                 opts.guidance_scale, opts.max_sequence_length)
        return [waves[i * n:(i + 1) * n] for i in range(len(prompts))]

    def write_samples(self, model: nn.Module, prompts: list[str], seed: int, out_path: str) -> str:
        """One WAV per sample beside ``out_path``; returns the first file's path."""
        rows = self.sample(model, prompts, self.options.samples_per_prompt, seed)
        return write_audio_samples([w for row in rows for w in row], out_path, self._parts().sample_rate)



def _cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    # the builders make float32 weights; diffusers warns on any .to(dtype), even a no-op
    return module if dtype == torch.float32 else module.to(dtype)
