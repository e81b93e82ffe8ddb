"""Golden values of Flow-DPO on a tiny SD3 and a tiny FLUX, in float64.

With fixed weights, VAE posteriors, conditioning, noise, latent samples and times, the
plugin's per-sample surrogate and the core's ``dpo`` loss must equal the formula computed here
by hand from the transformers' raw outputs (to 1e-10):

    x0 = (mean + exp(logvar / 2) * latent_eps - shift_factor) * scaling_factor
    x_t = (1 - t) x0 + t e,       v = e - x0
    m = mean over (C, h, w) of (v_pred(x_t, t) - v)^2,     s = -0.5 m
    L = -log sigmoid(-beta / 2 * [(m_w - m_w_ref) - (m_l - m_l_ref)])

SD3 is called with ``timestep = 1000 t``; FLUX with ``timestep = t`` on its packed 2 x 2
patches (packed and unpacked here by hand), with ``guidance`` when the model embeds it.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mmalign.objectives as objectives
from mmalign.models import flow
from mmalign.surrogate import Draw

from mmalign.modalities.image_diffusion.conditioning import Frozen
from mmalign.modalities.image_flow.surrogate import flow_surrogate

B, C, SIDE, BETA, GUIDANCE = 3, 16, 8, 500.0, 3.5


def _inputs(kind: str) -> tuple[Frozen, Draw]:
    gen = torch.Generator().manual_seed(7)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    width, pooled = (32, 32) if kind == "sd3" else (32, 16)
    frozen = Frozen(mean=rand(B, 2, C, SIDE, SIDE), logvar=rand(B, 2, C, SIDE, SIDE).clamp(-3, 0) - 1,
                    prompt_embeds=rand(B, 5, width), pooled=rand(B, pooled))
    t = torch.rand(B, generator=gen, dtype=torch.float64)
    draw = Draw({"timesteps": t, "noise": rand(B, C, SIDE, SIDE), "latent_eps": rand(B, C, SIDE, SIDE)})
    return frozen, draw


def _raw_velocity(model, kind: str, x_t: torch.Tensor, t: torch.Tensor, embeds, pooled) -> torch.Tensor:
    """The transformer called as its pipeline calls it, without the plugin's code."""
    if kind == "sd3":
        return model(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=embeds,
                     pooled_projections=pooled).sample
    n = x_t.shape[0]
    packed = x_t.reshape(n, C, SIDE // 2, 2, SIDE // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (SIDE // 2) ** 2, C * 4)
    rows, cols = torch.meshgrid(torch.arange(SIDE // 2), torch.arange(SIDE // 2), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).double()
    guidance = torch.full((n,), GUIDANCE, dtype=torch.float64) if model.config.guidance_embeds else None
    out = model(hidden_states=packed, timestep=t, guidance=guidance, pooled_projections=pooled,
                encoder_hidden_states=embeds, txt_ids=torch.zeros(embeds.shape[1], 3, dtype=torch.float64),
                img_ids=img_ids).sample
    return out.reshape(n, SIDE // 2, SIDE // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, C, SIDE, SIDE)


def _by_hand(model, kind: str, frozen: Frozen, draw: Draw, vae) -> torch.Tensor:
    """``m`` of every image, ``[B, 2]`` (winner, loser)."""
    out = torch.empty(B, 2, dtype=torch.float64)
    t, noise = draw["timesteps"], draw["noise"]
    for side in range(2):
        z = frozen.mean[:, side] + torch.exp(0.5 * frozen.logvar[:, side]) * draw["latent_eps"]
        x0 = (z - vae.shift_factor) * vae.scaling_factor
        x_t = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
        v_pred = _raw_velocity(model, kind, x_t, t, frozen.prompt_embeds, frozen.pooled)
        out[:, side] = ((v_pred - (noise - x0)) ** 2).mean(dim=(1, 2, 3))
    return out


CASES = {"sd3": (flow.tiny_sd3, {}), "flux": (flow.tiny_flux, {}),
         "flux_guidance": (flow.tiny_flux, {"guidance_embeds": True})}


@pytest.mark.parametrize("case", sorted(CASES))
def test_surrogate_and_dpo_loss_equal_the_formula(case: str):
    build, args = CASES[case]
    kind = "sd3" if case == "sd3" else "flux"
    policy, reference = build(seed=0, **args).double(), build(seed=1, **args).double()
    vae = (flow.tiny_sd3_parts if kind == "sd3" else flow.tiny_flux_parts)().vae.config
    frozen, draw = _inputs(kind)
    with torch.no_grad():
        sur_pol, values = flow_surrogate(policy, kind, frozen, draw, vae, GUIDANCE)
        sur_ref, _ = flow_surrogate(reference, kind, frozen, draw, vae, GUIDANCE)
        m_pol, m_ref = _by_hand(policy, kind, frozen, draw, vae), _by_hand(reference, kind, frozen, draw, vae)

    torch.testing.assert_close(sur_pol.chosen, -0.5 * m_pol[:, 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(sur_pol.rejected, -0.5 * m_pol[:, 1], rtol=0, atol=1e-10)
    torch.testing.assert_close(values, torch.cat([-0.5 * m_pol[:, 0], -0.5 * m_pol[:, 1]]), rtol=0, atol=1e-10)
    inside = -BETA / 2 * ((m_pol[:, 0] - m_ref[:, 0]) - (m_pol[:, 1] - m_ref[:, 1]))
    loss = objectives.get("dpo")(sur_pol, sur_ref, beta=BETA).loss
    torch.testing.assert_close(loss, -F.logsigmoid(inside), rtol=0, atol=1e-10)
    assert m_pol.std() > 0 and inside.abs().max() > 1e-3  # the check is not on degenerate values


def test_winner_and_loser_share_time_and_noise():
    """Both images of a row are noised with the row's one ``t`` and ``e``: x_t - (1 - t) x0 is
    ``t e`` for both, and the forward gets the same time for both."""
    from mmalign.modalities.denoising.pairs import flow_inputs

    frozen, draw = _inputs("sd3")
    x0 = torch.randn(B, 2, C, SIDE, SIDE, dtype=torch.float64)
    x_t, v, t = flow_inputs(x0, draw)
    x_t, v, t = (a.unflatten(0, (2, B)) for a in (x_t, v, t))  # side-major: [side, row, ...]
    assert torch.equal(t[0], t[1]) and torch.equal(t[0], draw["timesteps"])
    tt = draw["timesteps"][:, None, None, None]
    for side in range(2):
        torch.testing.assert_close(x_t[side] - (1 - tt) * x0[:, side], tt * draw["noise"], rtol=0, atol=1e-12)
        torch.testing.assert_close(v[side] + x0[:, side], draw["noise"], rtol=0, atol=1e-12)
