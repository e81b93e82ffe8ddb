"""One transformer forward of Wan and CogVideoX on noisy latents, in the plugin's layout.

Each model takes its time and its latents in its own convention (what its pipeline passes the
transformer):

==========  ======================  ==============  =========================================
model       ``timestep`` argument   latent layout   also
==========  ======================  ==============  =========================================
Wan 2.1     ``t * 1000``            ``[B, C, T,     ``encoder_hidden_states`` (UMT5, zeroed
                                    H, W]``         past each caption's length)
CogVideoX   integer ``t``           ``[B, T, C,     ``image_rotary_emb`` (3-D rotary cos / sin)
            in [0, 999]             H, W]``         when ``use_rotary_positional_embeddings``
                                                    (CogVideoX-5B); none for CogVideoX-2B
==========  ======================  ==============  =========================================

For Wan ``t`` in [0, 1] is the flow time of ``x_t = (1 - t) x_0 + t e`` (the scheduler's
sigma); its scheduler's timesteps are ``sigma * num_train_timesteps``. CogVideoX's ``t``
indexes its DDPM schedule. Both functions take and return ``[N, C, T, H, W]``; each model's
layout (declared in :data:`mmalign.models.video_diffusion.KINDS`) is applied on the way in and
undone on the way out (:mod:`.layout`).
"""
from __future__ import annotations

from types import SimpleNamespace

from diffusers import CogVideoXPipeline
from torch import Tensor, nn

from mmalign.modalities.video_diffusion.layout import from_model, to_model

#: the timestep scale of Wan's transformer (its scheduler's num_train_timesteps)
WAN_TIME_SCALE = 1000


def wan_prediction(model: nn.Module, x_t: Tensor, t: Tensor, embeds: Tensor, layout: str) -> Tensor:
    """Wan's velocity for ``x_t`` ``[N, C, T, H, W]`` at flow times ``t`` ``[N]``; the timestep
    keeps ``t``'s precision (the pipeline passes its float32 schedule, whatever the weights)."""
    dtype = model.dtype
    out = model(hidden_states=to_model(x_t, layout).to(dtype), timestep=t * WAN_TIME_SCALE,
                encoder_hidden_states=embeds.to(dtype), return_dict=False)[0]
    return from_model(out, layout)


def cogvideox_rotary(model: nn.Module, latent_frames: int, latent_height: int, latent_width: int,
                     spatial_factor: int, device) -> tuple[Tensor, Tensor] | None:
    """The rotary embedding ``CogVideoXPipeline`` builds for these latent sizes (its own method,
    on the transformer's config), or None for a model without rotary positions."""
    if not model.config.use_rotary_positional_embeddings:
        return None
    host = SimpleNamespace(transformer=model, vae_scale_factor_spatial=spatial_factor)
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(
        host, latent_height * spatial_factor, latent_width * spatial_factor, latent_frames, device)


def cogvideox_prediction(model: nn.Module, x_t: Tensor, t: Tensor, embeds: Tensor, spatial_factor: int,
                         layout: str) -> Tensor:
    """CogVideoX's v-prediction for ``x_t`` ``[N, C, T, H, W]`` at integer timesteps ``t`` ``[N]``."""
    dtype = model.dtype
    _, _, frames, height, width = x_t.shape
    rotary = cogvideox_rotary(model, frames, height, width, spatial_factor, x_t.device)  # float32, as the pipeline
    out = model(hidden_states=to_model(x_t, layout).to(dtype), encoder_hidden_states=embeds.to(dtype),
                timestep=t.long(), image_rotary_emb=rotary, return_dict=False)[0]
    return from_model(out, layout)
