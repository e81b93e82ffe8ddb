"""The Flow-DPO likelihood surrogate of a batch under one SD3 / FLUX transformer.

Rectified flow (Esser et al. 2024, arXiv:2403.03206, sec. 3): ``x_t = (1 - t) x_0 + t e`` and
the target is the velocity ``v = e - x_0``. Flow-DPO (Liu et al. 2025, "Improving Video
Generation with Human Feedback", arXiv:2501.13918) puts it in Diffusion-DPO's loss (Wallace et
al. 2023, arXiv:2311.12908):

``L = -log sigmoid(-beta/2 [(|v_w - v_theta(x_t^w, t)|^2 - |v_w - v_ref(x_t^w, t)|^2)
- (|v_l - v_theta(x_t^l, t)|^2 - |v_l - v_ref(x_t^l, t)|^2)])``

with winner and loser of a pair sharing ``t`` and ``e``, and each ``|.|^2`` the per-sample
**mean** over every non-batch dimension. With the surrogate ``s = -0.5 * mean((v_pred - v)^2)``
(:func:`mmalign.modalities.denoising.surrogate.per_sample`) the core's ``dpo``,
``-log sigmoid(beta [(s_w - s_w_ref) - (s_l - s_l_ref)])``, is exactly this loss:
``beta [(s_w - s_w_ref) - (s_l - s_l_ref)] = -beta/2 [(m_w - m_w_ref) - (m_l - m_l_ref)]``.

Flow-DPO derives a time-dependent ``beta_t`` and then trains with a constant ``beta``, because
``beta_t`` over-optimises the noisy steps; so does this. A ``beta`` tuned with a per-sample
**sum** of squared errors (``n`` latent elements per sample) is ``n`` times a mean-reduced one:
``beta_mean = n * beta_sum`` (docs/flow_matching.md).
"""
from __future__ import annotations

from torch import Tensor, nn

from mmalign.surrogate import Draw, Surrogate

from mmalign.modalities.denoising.draw import posterior_sample
from mmalign.modalities.denoising.pairs import flow_inputs
from mmalign.modalities.denoising.surrogate import assemble, per_sample
from mmalign.modalities.image_diffusion.conditioning import Frozen
from mmalign.modalities.image_diffusion.surrogate import conditions
from mmalign.modalities.image_flow.forward import flux_prediction, sd3_prediction


def flow_latents(frozen: Frozen, draw: Draw, scaling_factor: float, shift_factor: float) -> Tensor:
    """A sample of each image's VAE posterior, normalised as the transformer takes it,
    ``(z - shift_factor) * scaling_factor``: ``[B, S, C, h, w]``; the pair shares ``latent_eps``."""
    eps = draw["latent_eps"].to(frozen.mean)[:, None]
    return (posterior_sample(frozen.mean, frozen.logvar, eps) - shift_factor) * scaling_factor


def prediction(model: nn.Module, kind: str, x_t: Tensor, t: Tensor, frozen: Frozen, sides: int,
               guidance: float) -> Tensor:
    """The transformer's velocity for every image, each under its row's conditioning."""
    embeds, pooled, _ = conditions(frozen, sides, with_mismatched=False)
    if kind == "sd3":
        return sd3_prediction(model, x_t, t, embeds, pooled)
    return flux_prediction(model, x_t, t, embeds, pooled, guidance)


def flow_surrogate(model: nn.Module, kind: str, frozen: Frozen, draw: Draw, vae_config,
                   guidance: float) -> tuple[Surrogate, Tensor]:
    """The surrogate of every image from one forward over winners and losers, and the
    per-image values ``[S * B]`` in forward order."""
    x0 = flow_latents(frozen, draw, vae_config.scaling_factor, vae_config.shift_factor)
    b, s = x0.shape[:2]
    x_t, v, t = flow_inputs(x0, draw)
    values = per_sample(prediction(model, kind, x_t, t, frozen, s, guidance), v)
    return assemble(values, b, s), values
