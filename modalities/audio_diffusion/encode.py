"""The frozen work of the two forms: the conditioning of a caption and the VAE posterior of a clip.

ACE-Step (``AceStepPipeline``): the pipeline's ``encode_prompt`` (caption through the Qwen3
text encoder in its instruction / caption / metas template, the lyrics as token embeddings),
then its ``condition_encoder`` (lyric encoder, timbre encoder on the learned silence latent when
no reference clip is given, text projection), packed into one sequence ``[L, D]`` for the DiT's
cross-attention. The caption's duration is in its metas, so it is the training length. The
empty condition (caption dropout) is the learned ``null_condition_emb``, what the pipeline
guides with. Latents are the Oobleck VAE's posterior of the stereo waveform, ``[T, C]``.

Tango's form: FLAN-T5's last hidden states of the caption's tokens ``[L, D]`` (Tango passes
the attention mask to the UNet; here only the caption's own tokens are kept, which is the same),
the empty condition the encoded ``""``; latents the mel VAE's posterior of the log-mel
``[1, frames, n_mels]`` (:func:`mmalign.modalities.audio_io.log_mel`).

Each caption is encoded alone, so its conditioning never depends on the batch it lands in.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mmalign.models.audio_diffusion import AudioParts

from mmalign.modalities.audio_io import log_mel


def _device(module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def ace_condition(parts: AudioParts, prompt: str, lyrics: str, seconds: float) -> Tensor:
    """ACE-Step's packed cross-attention states of one caption and its lyrics, ``[L, D]``."""
    pipe, device = parts.pipeline, _device(parts.text_encoder)
    th, tm, lh, lm = pipe.encode_prompt(prompt=[prompt], lyrics=[lyrics], device=device, audio_duration=seconds)
    refer = pipe.condition_encoder.silence_latent[:, :math.ceil(30 * pipe.latents_per_second)].to(th)
    states, mask = pipe.condition_encoder(th, tm, lh, lm, refer, torch.zeros(1, dtype=torch.long, device=device))
    return states[0][mask[0].bool()]


@torch.no_grad()
def tango_condition(parts: AudioParts, prompt: str, max_sequence_length: int) -> Tensor:
    """FLAN-T5's states of the caption's tokens, ``[L, D]``."""
    ids = parts.tokenizer(prompt, max_length=max_sequence_length, truncation=True, return_tensors="pt").input_ids
    return parts.text_encoder(ids.to(_device(parts.text_encoder))).last_hidden_state[0]


def condition(parts: AudioParts, prompt: str, lyrics: str, seconds: float, max_sequence_length: int) -> Tensor:
    if parts.kind == "ace_step":
        return ace_condition(parts, prompt, lyrics, seconds)
    return tango_condition(parts, prompt, max_sequence_length)


@torch.no_grad()
def empty_condition(parts: AudioParts, max_sequence_length: int) -> Tensor:
    """The unconditional states: ACE-Step's ``null_condition_emb`` ``[1, D]`` (spread over a
    row's length where used), Tango's encoded ``""``."""
    if parts.kind == "ace_step":
        return parts.condition_encoder.null_condition_emb[0].detach().clone()
    return tango_condition(parts, "", max_sequence_length)


def mel_frames(parts: AudioParts, seconds: float, multiple: int) -> int:
    """Mel frames of a training clip, down to a multiple of the VAE and UNet downsampling."""
    frames = int(seconds * parts.mel["sample_rate"] / parts.mel["hop_length"])
    return frames // multiple * multiple


@torch.no_grad()
def posterior(parts: AudioParts, waves: Tensor, frames: int | None = None) -> tuple[Tensor, Tensor]:
    """The VAE posterior ``(mean, logvar)`` of waves ``[N, channels, samples]``: ACE-Step
    ``[N, T, C]``, Tango ``[N, C, f, m]`` of the log-mel."""
    vae = parts.vae
    if parts.kind == "ace_step":
        dist = vae.encode(waves.to(_device(vae), vae.dtype)).latent_dist
        return dist.mean.transpose(1, 2), dist.logvar.transpose(1, 2)
    mel = log_mel(waves[:, 0].to(_device(vae), torch.float32), parts.mel, frames).to(vae.dtype)
    dist = vae.encode(mel).latent_dist
    return dist.mean, dist.logvar
