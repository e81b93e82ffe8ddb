"""The likelihood surrogate of a batch of audio pairs under one ACE-Step DiT or Tango UNet.

Diffusion-DPO (Wallace et al. 2023, arXiv:2311.12908) with each form's own target:

* ACE-Step (arXiv:2506.00045), flow matching on raw Oobleck latents: ``x_t = (1 - t) x_0 + t e``,
  target ``v = e - x_0`` (Flow-DPO, Liu et al. 2025, arXiv:2501.13918). TangoFlux's CRPO
  (arXiv:2412.21037) is this loss plus twice the winner's flow-matching loss.
* Tango 2 (Majumder et al. 2024, arXiv:2404.09956), DDPM on the mel VAE's latents scaled by
  ``scaling_factor``: ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e``, target the scheduler's
  prediction type (v for the SD 2.1 schedule Tango uses).

Both: ``L = -log sigmoid(-beta/2 [(m_w - m_w_ref) - (m_l - m_l_ref)])``, winner and loser
sharing ``t``, ``e`` and the posterior sample, each ``m`` the mean squared error over all
non-batch dims; the surrogate ``s = -0.5 m``
(:func:`mmalign.modalities.denoising.surrogate.per_sample`) makes the core's ``dpo`` this loss.
"""
from __future__ import annotations

from torch import Tensor, nn

from mmalign.surrogate import Draw, Surrogate

from mmalign.modalities.audio_diffusion.conditioning import AudioFrozen
from mmalign.modalities.audio_diffusion.forward import ace_prediction, tango_prediction
from mmalign.modalities.denoising.draw import posterior_sample
from mmalign.modalities.denoising.pairs import ddpm_inputs, flow_inputs
from mmalign.modalities.denoising.surrogate import assemble, per_sample


def audio_latents(frozen: AudioFrozen, draw: Draw, scale: float) -> Tensor:
    """``scale * (mean + exp(logvar / 2) * latent_eps)`` ``[B, S, ...]``; the pair shares ``latent_eps``."""
    eps = draw["latent_eps"].to(frozen.mean)[:, None]
    return posterior_sample(frozen.mean, frozen.logvar, eps) * scale


def audio_surrogate(model: nn.Module, parts, frozen: AudioFrozen, draw: Draw) -> tuple[Surrogate, Tensor]:
    """The surrogate of every clip from one pass over winners and losers, and the per-clip
    values ``[S * B]`` side-major. ``parts``: :class:`mmalign.models.audio_diffusion.AudioParts`."""
    scale = 1.0 if parts.kind == "ace_step" else float(parts.vae.config.scaling_factor)
    x0 = audio_latents(frozen, draw, scale)
    b, s = x0.shape[:2]
    embeds, lengths = frozen.prompt_embeds.repeat(s, 1, 1), frozen.lengths.repeat(s)
    if parts.kind == "ace_step":
        x_t, target, t = flow_inputs(x0, draw)
        prediction = ace_prediction(model, x_t, t, embeds, lengths, parts.condition_encoder.silence_latent)
    else:
        x_t, target, t = ddpm_inputs(parts.scheduler, x0, draw)
        prediction = tango_prediction(model, x_t, t, embeds, lengths)
    values = per_sample(prediction, target)
    return assemble(values, b, s), values
