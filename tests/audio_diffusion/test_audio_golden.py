"""Golden values of audio Diffusion-DPO on a tiny ACE-Step and a tiny Tango-form UNet, in float64.

With fixed weights, posteriors, conditioning, noise, latent samples and times, the plugin's
surrogate and the core's ``dpo`` loss equal the formula computed here from the raw networks:

    z = mean + exp(logvar / 2) * latent_eps
    ACE-Step: x0 = z [T, C],  x_t = (1 - t) x0 + t e,  target e - x0,
              DiT(x_t, timestep=t, timestep_r=t, states, context = [silence tiled | ones])
    Tango:    x0 = scaling_factor * z [C, f, m],  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e,
              target sqrt(a_t) e - sqrt(1 - a_t) x0 (v),  UNet(x_t, t, states)
    m = mean over all non-batch dims of (prediction - target)^2,  s = -0.5 m
    L = -log sigmoid(-beta / 2 [(m_w - m_w_ref) - (m_l - m_l_ref)])
CRPO (TangoFlux, arXiv:2412.21037, eq. 10): L_CRPO = L_DPO + L_FM(winner), the winner's
flow-matching loss m_w; here ``dpo`` + 2 * ``sft`` on s_w = -0.5 m_w gives exactly that.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mmalign.objectives as objectives
from mmalign.models import audio_diffusion as ad
from mmalign.surrogate import Draw

from mmalign.modalities.audio_diffusion.conditioning import AudioFrozen
from mmalign.modalities.audio_diffusion.surrogate import audio_surrogate

B, D, BETA = 3, 32, 2000.0
SHAPES = {"ace_step": (10, 8), "tango": (8, 4, 4)}


def _inputs(kind: str) -> tuple[AudioFrozen, Draw]:
    gen = torch.Generator().manual_seed(7)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    shape = SHAPES[kind]
    lengths = torch.tensor([5, 3, 5])  # two lengths: the per-length grouping is exercised
    embeds = rand(B, 5, D) * (torch.arange(5)[None, :, None] < lengths[:, None, None])
    frozen = AudioFrozen(rand(B, 2, *shape), rand(B, 2, *shape).clamp(-3, 0) - 1, embeds, lengths)
    t = torch.rand(B, generator=gen, dtype=torch.float64) if kind == "ace_step" else torch.tensor([15, 480, 990])
    return frozen, Draw({"timesteps": t, "noise": rand(B, *shape), "latent_eps": rand(B, *shape),
                         "drop": torch.zeros(B, dtype=torch.bool)})


def _by_hand(model, parts, frozen: AudioFrozen, draw: Draw) -> torch.Tensor:
    """``m`` ``[B, 2]`` from the raw network, one row at a time on its own tokens."""
    out = torch.empty(B, 2, dtype=torch.float64)
    for i in range(B):
        t, e, cond = draw["timesteps"][i:i + 1], draw["noise"][i:i + 1], frozen.prompt_embeds[i:i + 1, :frozen.lengths[i]]
        for side in range(2):
            z = frozen.mean[i:i + 1, side] + torch.exp(0.5 * frozen.logvar[i:i + 1, side]) * draw["latent_eps"][i:i + 1]
            if parts.kind == "ace_step":
                silence = parts.condition_encoder.silence_latent.double()
                frames = z.shape[1]
                src = silence.repeat(1, -(-frames // silence.shape[1]), 1)[:, :frames]
                x_t, target = (1 - t) * z + t * e, e - z
                pred = model(hidden_states=x_t, timestep=t, timestep_r=t, encoder_hidden_states=cond,
                             context_latents=torch.cat([src, torch.ones_like(src)], -1)).sample
            else:
                x0 = z * parts.vae.config.scaling_factor
                a = parts.scheduler.alphas_cumprod.double()[t].view(1, 1, 1, 1)
                x_t, target = a.sqrt() * x0 + (1 - a).sqrt() * e, a.sqrt() * e - (1 - a).sqrt() * x0
                pred = model(x_t, t, encoder_hidden_states=cond).sample
            out[i, side] = ((pred - target) ** 2).mean()
    return out


def _setup(kind: str):
    build = getattr(ad, f"tiny_{kind}")
    parts = getattr(ad, f"tiny_{kind}_parts")()
    parts.condition_encoder.double() if kind == "ace_step" else None
    return build(seed=0).double(), build(seed=1).double(), parts


@pytest.mark.parametrize("kind", ["ace_step", "tango"])
def test_surrogate_and_dpo_loss_equal_the_formula(kind: str):
    policy, reference, parts = _setup(kind)
    frozen, draw = _inputs(kind)
    with torch.no_grad():
        sur_pol, values = audio_surrogate(policy, parts, frozen, draw)
        sur_ref, _ = audio_surrogate(reference, parts, frozen, draw)
        m_pol, m_ref = _by_hand(policy, parts, frozen, draw), _by_hand(reference, parts, frozen, draw)
    torch.testing.assert_close(sur_pol.chosen, -0.5 * m_pol[:, 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(sur_pol.rejected, -0.5 * m_pol[:, 1], rtol=0, atol=1e-10)
    torch.testing.assert_close(sur_ref.rejected, -0.5 * m_ref[:, 1], rtol=0, atol=1e-10)
    torch.testing.assert_close(values, torch.cat([-0.5 * m_pol[:, 0], -0.5 * m_pol[:, 1]]), rtol=0, atol=1e-10)
    inside = -BETA / 2 * ((m_pol[:, 0] - m_ref[:, 0]) - (m_pol[:, 1] - m_ref[:, 1]))
    loss = objectives.get("dpo")(sur_pol, sur_ref, beta=BETA).loss
    torch.testing.assert_close(loss, -F.logsigmoid(inside), rtol=0, atol=1e-10)
    assert m_pol.std() > 0 and inside.abs().max() > 1e-3


def test_crpo_on_ace_step_is_tangoflux_written_form():
    """``dpo`` + 2 ``sft`` on the flow surrogate equals TangoFlux's L_DPO + L_FM(winner)."""
    policy, reference, parts = _setup("ace_step")
    frozen, draw = _inputs("ace_step")
    with torch.no_grad():
        sur_pol, _ = audio_surrogate(policy, parts, frozen, draw)
        sur_ref, _ = audio_surrogate(reference, parts, frozen, draw)
        m_pol, m_ref = _by_hand(policy, parts, frozen, draw), _by_hand(reference, parts, frozen, draw)
    crpo = objectives.get("dpo")(sur_pol, sur_ref, beta=BETA).loss + 2 * objectives.get("sft")(sur_pol, sur_ref).loss
    inside = -BETA / 2 * ((m_pol[:, 0] - m_ref[:, 0]) - (m_pol[:, 1] - m_ref[:, 1]))
    written = -F.logsigmoid(inside) + m_pol[:, 0]
    torch.testing.assert_close(crpo, written, rtol=0, atol=1e-10)
