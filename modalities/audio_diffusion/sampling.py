"""Sampling clips from a trained denoiser, and writing them as WAV files.

ACE-Step samples through its own pipeline (the frozen parts with the transformer put back),
text2music with the timbre encoder on the silence latent. Tango's form has no diffusers
pipeline, so its loop is here, as Tango's inference runs it: the scheduler's steps with
classifier-free guidance against the encoded ``""``, the mel VAE's decoder, then the HiFi-GAN
vocoder. Every clip has its own generator, so a prompt's clips depend on its prompt and seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from diffusers import DDIMScheduler
from torch import Tensor, nn

from mmalign.models.audio_diffusion import AudioParts

from mmalign.modalities.audio_diffusion.encode import condition, empty_condition
from mmalign.modalities.audio_diffusion.forward import tango_prediction
from mmalign.modalities.audio_io import write_wav
from mmalign.modalities.image_diffusion.sampling import image_generators


@torch.no_grad()
def sample_ace(parts: AudioParts, model: nn.Module, prompts: Sequence[str], lyrics: Sequence[str], n: int,
               seeds: Sequence[int], seconds: float, steps: int, guidance_scale: float) -> list[Tensor]:
    """One wave ``[channels, samples]`` per sample, prompt-major."""
    pipe = parts.with_transformer(model)
    pipe.set_progress_bar_config(disable=True)
    gens = image_generators(seeds, n)
    out = []
    for i, (p, l) in enumerate(zip(prompts, lyrics)):
        audio = pipe(prompt=[p] * n, lyrics=[l] * n, audio_duration=seconds, num_inference_steps=steps,
                     guidance_scale=guidance_scale, generator=gens[i * n:(i + 1) * n], output_type="pt").audios
        out += list(audio.float().cpu())
    return out


@torch.no_grad()
def sample_tango(parts: AudioParts, model: nn.Module, prompts: Sequence[str], n: int, seeds: Sequence[int],
                 latent_shape: Sequence[int], steps: int, guidance_scale: float, max_sequence_length: int) -> list[Tensor]:
    """One mono wave ``[1, samples]`` per sample, prompt-major (DDIM steps of the training schedule)."""
    scheduler = DDIMScheduler.from_config(parts.scheduler.config)
    scheduler.set_timesteps(steps)
    empty = empty_condition(parts, max_sequence_length)
    out = []
    for i, prompt in enumerate(prompts):
        cond = condition(parts, prompt, "", 0.0, max_sequence_length)
        for gen in image_generators(seeds[i:i + 1], n):
            x = torch.randn((1, *latent_shape), generator=gen) * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                pred = [tango_prediction(model, x, t.view(1), c[None], torch.tensor([len(c)])) for c in (cond, empty)]
                guided = pred[1] + guidance_scale * (pred[0] - pred[1])
                x = scheduler.step(guided, t, x).prev_sample
            mel = parts.vae.decode(x / parts.vae.config.scaling_factor).sample  # [1, 1, frames, n_mels]
            out.append(parts.vocoder(mel[:, 0]).reshape(1, -1).float().cpu())
    return out


def write_audio_samples(waves: list[Tensor], out_path: str, rate: int) -> str:
    """``<out_path stem>-<k>.wav`` per clip; returns the folder's first file."""
    base = Path(out_path).with_suffix("")
    paths = [write_wav(f"{base}-{k}.wav", w, rate) for k, w in enumerate(waves)]
    return paths[0]
