"""The frozen work of Wan / CogVideoX: the caption's T5 (UMT5 for Wan) embeddings, by the
pipeline's own ``encode_prompt``, and the causal video VAE's posterior of each clip.

Wan (``WanPipeline``): ``prompt_embeds`` ``[B, L, 4096]``, UMT5's last hidden states of the
caption's tokens, zeroed past its length (the pipeline trims and zero-pads them), ``L`` = 512
tokens by default. CogVideoX (``CogVideoXPipeline``): T5's last hidden states ``[B, 226, 4096]``;
the transformer's text positions are fixed at ``max_text_seq_length`` (226), so the caption
length must be that. Neither pipeline zeroes the empty prompt: caption dropout trains on the
encoded ``""``, what both sample the unconditional branch with.

The latents are normalised as each pipeline un-normalises them before decoding: Wan per
channel, ``(z - latents_mean) / latents_std`` (``vae/config.json``); CogVideoX
``z * scaling_factor``. :func:`normalisation` gives both as one ``(z - shift) * scale``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from mmalign.errors import ConfigError
from mmalign.models.video_diffusion import VideoParts

from mmalign.modalities.image_diffusion.encode import Encoders, vae_posterior

#: WanPipeline's default caption length (its ``__call__``'s ``max_sequence_length``)
WAN_TOKENS = 512


def text_length(parts: VideoParts, transformer_config, max_sequence_length: int | None) -> int:
    """Tokens per caption: CogVideoX's are fixed by its transformer; Wan's are the option or
    its pipeline's default, capped at what the tokenizer takes."""
    if parts.kind == "cogvideox":
        fixed = transformer_config.max_text_seq_length
        if max_sequence_length not in (None, fixed):
            raise ConfigError(f"model.options.max_sequence_length is {max_sequence_length}, but a CogVideoX "
                              f"transformer takes exactly max_text_seq_length={fixed} text tokens: unset it")
        return fixed
    return max_sequence_length or min(WAN_TOKENS, parts.tokenizer.model_max_length)


@torch.no_grad()
def encode_prompts(parts: VideoParts, prompts: list[str], max_sequence_length: int) -> dict[str, Tensor]:
    """``{"prompt_embeds": [B, L, D]}`` of ``prompts``, as the pipeline conditions on them."""
    device = next(parts.pipeline.text_encoder.parameters()).device
    embeds, _ = parts.pipeline.encode_prompt(prompt=list(prompts), do_classifier_free_guidance=False,
                                             max_sequence_length=max_sequence_length, device=device)
    return {"prompt_embeds": embeds}


def is_truncated(parts: VideoParts, max_sequence_length: int, prompt: str) -> bool:
    """Whether the text encoder's context cuts ``prompt`` (its ``</s>`` included)."""
    return len(parts.tokenizer(prompt, truncation=False, verbose=False).input_ids) > max_sequence_length


def normalisation(parts: VideoParts) -> tuple[Tensor, Tensor]:
    """``(shift, scale)`` ``[C]`` each, float64 (cast to the latents' dtype where used): the
    transformer's latent is ``(z - shift) * scale``."""
    cfg, f64 = parts.vae.config, torch.float64
    if parts.kind == "wan":
        return torch.tensor(cfg.latents_mean, dtype=f64), 1.0 / torch.tensor(cfg.latents_std, dtype=f64)
    return torch.zeros(cfg.latent_channels, dtype=f64), torch.full((cfg.latent_channels,), float(cfg.scaling_factor),
                                                                     dtype=f64)


def video_encoders(parts: VideoParts, max_sequence_length: int) -> Encoders:
    """The :class:`~mmalign.modalities.image_diffusion.encode.Encoders` of a Wan / CogVideoX
    model; ``latents`` takes clips ``[N, 3, T, H, W]`` in [-1, 1] and gives the posterior
    ``(mean, logvar)`` ``[N, C, T', H', W']``."""
    encode = lambda prompts: encode_prompts(parts, prompts, max_sequence_length)  # noqa: E731
    return Encoders(prompts=encode, empty=lambda: encode([""]), latents=lambda px: vae_posterior(parts.vae, px),
                    modules=parts.frozen_modules(),
                    config={"kind": parts.kind, "max_sequence_length": max_sequence_length})
