"""Golden values of video Diffusion-DPO on a tiny Wan and a tiny CogVideoX, in float64.

With fixed weights, VAE posteriors, conditioning, noise, latent samples and times, the
plugin's per-sample surrogate and the core's ``dpo`` loss must equal the formula computed here
by hand from the transformers' raw outputs (to 1e-10):

    z = mean + exp(logvar / 2) * latent_eps                       [C, T', H', W'] per clip
    Wan:        x0 = (z - latents_mean_c) / latents_std_c,  x_t = (1 - t) x0 + t e,  target e - x0,
                called with timestep = 1000 t on [B, C, T, H, W]
    CogVideoX:  x0 = z * scaling_factor,  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e,
                target sqrt(a_t) e - sqrt(1 - a_t) x0, called with the integer t on
                [B, T, C, H, W] (and the 3-D rotary embedding when the model has rotary positions)
    m = mean over ALL of (C, T', H', W') of (prediction - target)^2,     s = -0.5 m
    L = -log sigmoid(-beta / 2 * [(m_w - m_w_ref) - (m_l - m_l_ref)])
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_3d_rotary_pos_embed

import mmalign.objectives as objectives
from mmalign.models import video_diffusion as vd
from mmalign.surrogate import Draw

from mmalign.modalities.image_diffusion.conditioning import Frozen
from mmalign.modalities.video_diffusion.encode import normalisation
from mmalign.modalities.video_diffusion.surrogate import video_surrogate

B, C, T, SIDE, TOKENS, BETA = 3, 4, 3, 4, 16, 5000.0
CASES = {"wan": ("wan", {}), "cogvideox_5b": ("cogvideox", {"rotary": True}),
         "cogvideox_2b": ("cogvideox", {"rotary": False})}


def _inputs(kind: str) -> tuple[Frozen, Draw]:
    gen = torch.Generator().manual_seed(11)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    frozen = Frozen(mean=rand(B, 2, C, T, SIDE, SIDE), logvar=rand(B, 2, C, T, SIDE, SIDE).clamp(-3, 0) - 1,
                    prompt_embeds=rand(B, TOKENS, 32))
    if kind == "wan":
        t = torch.rand(B, generator=gen, dtype=torch.float64)
    else:
        t = torch.tensor([37, 480, 921])
    return frozen, Draw({"timesteps": t, "noise": rand(B, C, T, SIDE, SIDE), "latent_eps": rand(B, C, T, SIDE, SIDE)})


def _rotary(model) -> tuple[torch.Tensor, torch.Tensor] | None:
    """CogVideoX-5B's 3-D rotary embedding of a 4 x 4 latent in 2 x 2 patches: the sample size
    is the input size, so the crop region is the whole grid."""
    if not model.config.use_rotary_positional_embeddings:
        return None
    grid = SIDE // model.config.patch_size
    return get_3d_rotary_pos_embed(embed_dim=model.config.attention_head_dim, crops_coords=((0, 0), (grid, grid)),
                                   grid_size=(grid, grid), temporal_size=T)


def _by_hand(model, parts, frozen: Frozen, draw: Draw) -> torch.Tensor:
    """``m`` of every clip, ``[B, 2]`` (winner, loser), from the raw transformer."""
    out = torch.empty(B, 2, dtype=torch.float64)
    t, e = draw["timesteps"], draw["noise"]
    cfg = parts.vae.config
    for side in range(2):
        z = frozen.mean[:, side] + torch.exp(0.5 * frozen.logvar[:, side]) * draw["latent_eps"]
        if parts.kind == "wan":
            mu = torch.tensor(cfg.latents_mean, dtype=torch.float64).view(1, C, 1, 1, 1)
            sd = torch.tensor(cfg.latents_std, dtype=torch.float64).view(1, C, 1, 1, 1)
            x0 = (z - mu) / sd
            tt = t.view(B, 1, 1, 1, 1)
            x_t, target = (1 - tt) * x0 + tt * e, e - x0
            pred = model(hidden_states=x_t, timestep=t * 1000, encoder_hidden_states=frozen.prompt_embeds).sample
        else:
            x0 = z * cfg.scaling_factor
            a = parts.scheduler.alphas_cumprod.double()[t].view(B, 1, 1, 1, 1)
            x_t, target = a.sqrt() * x0 + (1 - a).sqrt() * e, a.sqrt() * e - (1 - a).sqrt() * x0
            pred = model(hidden_states=x_t.permute(0, 2, 1, 3, 4), encoder_hidden_states=frozen.prompt_embeds,
                         timestep=t, image_rotary_emb=_rotary(model)).sample.permute(0, 2, 1, 3, 4)
        out[:, side] = ((pred - target) ** 2).mean(dim=(1, 2, 3, 4))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_surrogate_and_dpo_loss_equal_the_formula(case: str):
    kind, args = CASES[case]
    build = getattr(vd, f"tiny_{kind}")
    policy, reference = build(seed=0, **args).double(), build(seed=1, **args).double()
    parts = getattr(vd, f"tiny_{kind}_parts")(**args)
    frozen, draw = _inputs(kind)
    with torch.no_grad():
        sur_pol, values = video_surrogate(policy, parts, frozen, draw, normalisation(parts))
        sur_ref, _ = video_surrogate(reference, parts, frozen, draw, normalisation(parts))
        m_pol, m_ref = _by_hand(policy, parts, frozen, draw), _by_hand(reference, parts, frozen, draw)

    torch.testing.assert_close(sur_pol.chosen, -0.5 * m_pol[:, 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(sur_pol.rejected, -0.5 * m_pol[:, 1], rtol=0, atol=1e-10)
    torch.testing.assert_close(sur_ref.chosen, -0.5 * m_ref[:, 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(values, torch.cat([-0.5 * m_pol[:, 0], -0.5 * m_pol[:, 1]]), rtol=0, atol=1e-10)
    inside = -BETA / 2 * ((m_pol[:, 0] - m_ref[:, 0]) - (m_pol[:, 1] - m_ref[:, 1]))
    loss = objectives.get("dpo")(sur_pol, sur_ref, beta=BETA).loss
    torch.testing.assert_close(loss, -F.logsigmoid(inside), rtol=0, atol=1e-10)
    assert m_pol.std() > 0 and inside.abs().max() > 1e-2  # the check is not on degenerate values


def test_the_per_sample_mean_is_over_every_non_batch_dim():
    """One number per clip, not one per column as a mean over dims [1, 2, 3] of a 5-D tensor
    gives: a clip whose error sits in one column has the same ``m`` as one spreading it."""
    from mmalign.modalities.denoising.surrogate import per_sample

    target = torch.zeros(2, C, T, SIDE, SIDE, dtype=torch.float64)
    pred = target.clone()
    pred[0, ..., 0] = 2.0  # all error in the first width column
    pred[1] = 2.0 / SIDE ** 0.5  # the same squared error spread over every element
    torch.testing.assert_close(per_sample(pred, target), torch.full((2,), -0.5 * 4 / SIDE, dtype=torch.float64))
    per_column = (pred - target).pow(2).mean(dim=(1, 2, 3))  # [2, W]
    assert per_column.shape == (2, SIDE) and not torch.allclose(per_column[0], per_column[1])


@pytest.mark.parametrize("kind", ["wan", "cogvideox"])
def test_winner_and_loser_share_time_and_noise(kind: str):
    """Both clips of a row are noised with the row's one ``t`` and ``e``."""
    from mmalign.modalities.denoising.pairs import ddpm_inputs, flow_inputs

    parts = getattr(vd, f"tiny_{kind}_parts")()
    frozen, draw = _inputs(kind)
    x0 = torch.randn(B, 2, C, T, SIDE, SIDE, dtype=torch.float64)
    x_t, target, t = flow_inputs(x0, draw) if kind == "wan" else ddpm_inputs(parts.scheduler, x0, draw)
    x_t, target, t = (a.unflatten(0, (2, B)) for a in (x_t, target, t))  # side-major: [side, row, ...]
    assert torch.equal(t[0], t[1]) and torch.equal(t[0].to(draw["timesteps"]), draw["timesteps"])
    # x_t and the target are both linear in (x0, e) with the same coefficients for the two sides:
    # x_t(side) - x_t(other side) depends on x0 alone, so it is zero where x0 is equal
    same = x0.clone()
    same[:, 1] = same[:, 0]
    inputs = flow_inputs(same, draw) if kind == "wan" else ddpm_inputs(parts.scheduler, same, draw)
    x_same = inputs[0].unflatten(0, (2, B))
    torch.testing.assert_close(x_same[0], x_same[1], rtol=0, atol=0)
