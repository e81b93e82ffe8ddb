"""The frozen work: text embeddings, VAE latent distributions and SDXL time ids.

These mirror what ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` feed the UNet,
so a model trained on them samples correctly in those pipelines.

:class:`Encoders` is what the cache (``cache.py``) and the step (``conditioning.py``) need of a
text-to-image model's frozen parts, as plain functions: SD 1.5 / SDXL give theirs through
:func:`sd_encoders`; the flow-matching sibling plugin (``image_flow``: SD3, FLUX) its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from mmalign.models.diffusion import DiffusionParts


@dataclass(frozen=True)
class Encoders:
    """A text-to-image model's frozen work.

    * ``prompts(list[str])``: ``{"prompt_embeds": [B, L, D]}`` and, where the model has one, a
      pooled embedding ``"pooled": [B, P]``;
    * ``empty()``: what the pipeline conditions the empty prompt on, ``[1, ...]`` each;
    * ``latents(pixels in [-1, 1])``: the VAE posterior ``(mean, logvar)`` (images
      ``[N, 3, R, R]``, clips ``[N, 3, T, H, W]``);
    * ``modules``: the frozen networks (their weights key the cache); ``config``: anything else
      the encodings depend on; ``time_ids``: whether the model takes SDXL's micro-conditioning.
    """

    prompts: Callable[[list[str]], dict[str, Tensor]]
    empty: Callable[[], dict[str, Tensor]]
    latents: Callable[[Tensor], tuple[Tensor, Tensor]]
    modules: list[nn.Module]
    config: dict[str, Any] = field(default_factory=dict)
    time_ids: bool = False


def sd_encoders(parts: DiffusionParts) -> Encoders:
    """The :class:`Encoders` of an SD 1.5 / SDXL model."""
    return Encoders(prompts=lambda prompts: encode_prompts(parts, prompts), empty=lambda: empty_prompt(parts),
                    latents=lambda pixels: latent_distribution(parts, pixels), modules=parts.frozen_modules(),
                    config={"force_zeros": parts.force_zeros_for_empty_prompt}, time_ids=parts.is_sdxl)


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _ids(tokenizer, prompts: list[str]) -> Tensor:
    # the pipelines pad to the tokenizer's maximum and truncate longer captions
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def is_truncated(tokenizer, prompt: str) -> bool:
    """Whether ``prompt`` has more tokens (with BOS / EOS) than the text encoder takes."""
    return len(tokenizer(prompt, truncation=False, verbose=False).input_ids) > tokenizer.model_max_length


@torch.no_grad()
def encode_prompts(parts: DiffusionParts, prompts: list[str]) -> dict[str, Tensor]:
    """Text conditioning of ``prompts``.

    SD 1.5: ``prompt_embeds`` is the text encoder's last hidden state ``[B, L, D]``.
    SDXL: the penultimate hidden states of both encoders concatenated on the feature axis
    ``[B, L, D1 + D2]``, and ``pooled`` ``[B, P]`` the second encoder's projected embedding.
    """
    if not parts.is_sdxl:
        encoder = parts.text_encoder
        ids = _ids(parts.tokenizer, prompts).to(_device(encoder))
        return {"prompt_embeds": encoder(ids)[0]}
    hidden, pooled = [], None
    for tokenizer, encoder in ((parts.tokenizer, parts.text_encoder), (parts.tokenizer_2, parts.text_encoder_2)):
        out = encoder(_ids(tokenizer, prompts).to(_device(encoder)), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]  # CLIPTextModelWithProjection: the projected pooled embedding
    return {"prompt_embeds": torch.cat(hidden, dim=-1), "pooled": pooled}


def empty_prompt(parts: DiffusionParts) -> dict[str, Tensor]:
    """What the pipeline gives the empty prompt, ``[1, ...]``: all zeros for an SDXL model whose
    pipeline sets ``force_zeros_for_empty_prompt``, otherwise the encoded ``""``."""
    encoded = encode_prompts(parts, [""])
    if parts.force_zeros_for_empty_prompt:
        return {k: torch.zeros_like(v) for k, v in encoded.items()}
    return encoded


@torch.no_grad()
def latent_distribution(parts: DiffusionParts, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """The VAE posterior ``N(mean, exp(logvar))`` of ``pixels`` in [-1, 1], ``[N, C, h, w]`` each.

    Kept as a distribution rather than one sample so that training still draws a fresh
    latent per step (``mean + exp(logvar / 2) * eps``), as the SD training scripts do.
    """
    return vae_posterior(parts.vae, pixels)


@torch.no_grad()
def vae_posterior(vae, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean, logvar)`` of an ``AutoencoderKL``'s posterior of ``pixels``."""
    dist = vae.encode(pixels.to(_device(vae), vae.dtype)).latent_dist
    return dist.mean, dist.logvar


def time_ids(original: tuple[int, int], crop: tuple[int, int], resolution: int) -> Tensor:
    """SDXL micro-conditioning (Podell et al. 2023, sec. 2.2): original ``(h, w)``, crop
    ``(top, left)``, target ``(h, w)``, as ``[6]``."""
    return torch.tensor([*original, *crop, resolution, resolution], dtype=torch.float32)
