"""The Diffusion-DPO likelihood surrogate of a batch of clip pairs under one Wan / CogVideoX
transformer.

Diffusion-DPO (Wallace et al. 2023, arXiv:2311.12908) with each model's own target:

* Wan (Wang et al. 2025, arXiv:2503.20314), rectified flow: ``x_t = (1 - t) x_0 + t e``, target
  the velocity ``v = e - x_0``; in DPO this is Flow-DPO (Liu et al. 2025, arXiv:2501.13918).
* CogVideoX (Yang et al. 2024, arXiv:2408.06072), v-prediction on a DDPM schedule:
  ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) e`` (``scheduler.add_noise``), target
  ``v = sqrt(a_t) e - sqrt(1 - a_t) x_0`` (``scheduler.get_velocity``). CogVideoX's fine-tuning
  script regresses ``x_0`` with weight ``1 / (1 - a_t)``; since
  ``x0_pred - x_0 = -sqrt(1 - a_t) (v_pred - v)``, that is exactly the v error used here.

Both: ``L = -log sigmoid(-beta/2 [(m_w - m_w_ref) - (m_l - m_l_ref)])``, the winner and the
loser of a pair sharing ``t``, ``e`` and the VAE-posterior sample, and each ``m`` the mean of
the squared error over **all** non-batch dims ``(C, T', H', W')`` of the clip's latent. With
the surrogate ``s = -0.5 * m`` (:func:`mmalign.modalities.denoising.surrogate.per_sample`)
the core's ``dpo`` is exactly this loss.
"""
from __future__ import annotations

from torch import Tensor, nn

from mmalign.surrogate import Draw, Surrogate

from mmalign.modalities.denoising.draw import posterior_sample
from mmalign.modalities.denoising.pairs import ddpm_inputs, flow_inputs
from mmalign.modalities.denoising.surrogate import assemble, per_sample
from mmalign.modalities.image_diffusion.conditioning import Frozen
from mmalign.modalities.image_diffusion.surrogate import conditions
from mmalign.modalities.video_diffusion.forward import cogvideox_prediction, wan_prediction


def video_latents(frozen: Frozen, draw: Draw, shift: Tensor, scale: Tensor) -> Tensor:
    """A sample of each clip's VAE posterior, normalised per channel as the transformer takes it,
    ``(z - shift) * scale``: ``[B, S, C, T', H', W']``; the pair shares ``latent_eps``."""
    eps = draw["latent_eps"].to(frozen.mean)[:, None]
    view = (-1, 1, 1, 1)
    z = posterior_sample(frozen.mean, frozen.logvar, eps)
    return (z - shift.to(z).view(view)) * scale.to(z).view(view)


def video_surrogate(model: nn.Module, parts, frozen: Frozen, draw: Draw,
                    normalisation: tuple[Tensor, Tensor]) -> tuple[Surrogate, Tensor]:
    """The surrogate of every clip from one forward over winners and losers, and the per-clip
    values ``[S * B]`` in forward order. ``parts``: :class:`mmalign.models.video_diffusion.VideoParts`."""
    x0 = video_latents(frozen, draw, *normalisation)
    b, s = x0.shape[:2]
    embeds, _, _ = conditions(frozen, s, with_mismatched=False)
    layout = parts.spec.layout
    if parts.kind == "wan":  # rectified flow (KINDS: objective "flow")
        x_t, target, t = flow_inputs(x0, draw)
        prediction = wan_prediction(model, x_t, t, embeds, layout)
    else:
        x_t, target, t = ddpm_inputs(parts.scheduler, x0, draw)
        prediction = cogvideox_prediction(model, x_t, t, embeds, parts.spatial_factor, layout)
    values = per_sample(prediction, target)
    return assemble(values, b, s), values

