"""Unpaired rows with labels and the mismatched-caption term (Diffusion-KTO), and InPO's
inversion draw."""
from __future__ import annotations

import torch

from mmalign.modalities.image_diffusion.conditioning import Frozen
from mmalign.modalities.image_diffusion.inversion import inverse_scheduler
from mmalign.modalities.image_diffusion.surrogate import diffusion_surrogate, latents_of

from diffusion_helpers import make_modality, pickapic_rows, write_parquet


def test_unpaired_surrogate_has_labels_and_kl_mismatched(tmp_path):
    path = write_parquet(tmp_path / "p.parquet", pickapic_rows(2))
    modality, policy = make_modality("tiny_sdxl", pairing="unpaired")
    batch = modality.collate(modality.load_records(path, "pickapic"))
    draw = modality.draw(batch, 0, policy)
    with torch.no_grad():
        sur = modality.surrogate(policy, batch, draw, frozenset({"label", "terms:kl_mismatched"}))
        frozen = modality._frozen(batch, draw)
        # by hand: the same images and draw, each under the previous row's caption
        rolled = Frozen(frozen.mean, frozen.logvar, frozen.prompt_embeds.roll(1, 0), frozen.pooled.roll(1, 0),
                        frozen.time_ids)
        expected, _ = diffusion_surrogate(policy, modality.parts.scheduler, rolled, draw,
                                          modality.parts.vae.config.scaling_factor)
    assert sur.rejected is None and sur.label.tolist() == [1.0, 0.0, 1.0, 0.0]
    torch.testing.assert_close(sur.terms["kl_mismatched"], expected.chosen, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(sur.terms["kl_mismatched"], sur.chosen)


def test_inversion_draw_is_ddim_inversion_under_the_model(pickapic_file):
    modality, policy = make_modality("tiny_sd15", draw="inversion", inversion_steps=4)
    assert modality.policy_dependent_draw
    batch = modality.collate(modality.load_records(pickapic_file, "pickapic"))
    draw = modality.draw(batch, 0, policy)
    frozen = modality._frozen(batch, draw)
    scheduler = modality.parts.scheduler
    a = scheduler.alphas_cumprod
    grid = inverse_scheduler(scheduler, 4).timesteps.tolist()
    assert grid == [249, 499, 749, 999]  # trailing spacing: 1000 * k / 4 - 1
    row, side = 0, 1
    assert not {"latents", "_frozen"} & set(draw.values)  # randomness only: frozen inputs live in batch.frozen
    x0 = latents_of(frozen, draw, modality.parts.vae.config.scaling_factor)[row, side:side + 1]
    t_row = int(draw["timesteps"][row])
    # by hand, DDIM (eta = 0) run backwards: x_next = sqrt(a_next) * x0_hat + sqrt(1 - a_next) * eps_hat,
    # x0_hat = (x - sqrt(1 - a_now) * eps_hat) / sqrt(a_now), eps_hat the model at the current level
    x, a_now, level = x0, torch.tensor(1.0), 0
    with torch.no_grad():
        for target in grid[: grid.index(t_row) + 1]:
            eps = policy(x, torch.tensor([level]), encoder_hidden_states=frozen.prompt_embeds[row:row + 1]).sample
            x0_hat = (x - (1 - a_now).sqrt() * eps) / a_now.sqrt()
            x = a[target].sqrt() * x0_hat + (1 - a[target]).sqrt() * eps
            a_now, level = a[target], target
    torch.testing.assert_close(draw["noisy"][row, side:side + 1], x, rtol=1e-4, atol=1e-5)
    # the training noise is the one the inversion implies: x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e
    implied = (x - a[t_row].sqrt() * x0) / (1 - a[t_row]).sqrt()
    torch.testing.assert_close(draw["noise"][row, side:side + 1], implied, rtol=1e-4, atol=1e-4)
    assert len(set(draw["timesteps"].tolist())) > 1
    sur = modality.surrogate(policy, batch, draw, frozenset())
    assert sur.chosen.shape == sur.rejected.shape == (len(batch),) and sur.chosen.requires_grad


def test_inversion_steps_must_divide_the_schedule(pickapic_file):
    import pytest

    from mmalign.errors import ConfigError

    modality, policy = make_modality("tiny_sd15", draw="inversion", inversion_steps=3)
    batch = modality.collate(modality.load_records(pickapic_file, "pickapic"))
    with pytest.raises(ConfigError, match=r"inversion_steps \(3\) must divide the scheduler's 1000"):
        modality.draw(batch, 0, policy)
