"""The per-sample surrogate ``-0.5 * mean((prediction - target)^2)`` of Wallace et al. 2023
(Diffusion-DPO, arXiv:2311.12908): the mean runs over every non-batch dim, of image and video
latents alike; and the layout of pairs and KTO's mismatched term."""
from __future__ import annotations

import math

import torch

import mmalign.objectives as objectives
from mmalign.modalities.denoising.surrogate import KL_MISMATCHED, assemble, mismatched, per_sample, side_major


def test_mean_over_every_non_batch_dim_of_an_image_latent():
    """[B, C, H, W] = [2, 1, 1, 2]. Row 0: errors (1 - 0, 3 - 1) = (1, 2), squares (1, 4), mean 2.5,
    s = -1.25. Row 1: errors (0 - 2, 0 - 2), squares (4, 4), mean 4, s = -2."""
    prediction = torch.tensor([1.0, 3.0, 0.0, 0.0]).view(2, 1, 1, 2)
    target = torch.tensor([0.0, 1.0, 2.0, 2.0]).view(2, 1, 1, 2)
    torch.testing.assert_close(per_sample(prediction, target), torch.tensor([-1.25, -2.0]))


def test_mean_over_every_non_batch_dim_of_a_video_latent():
    """[B, C, F, H, W] = [1, 2, 2, 1, 1]: errors (1, 0, 0, 3) over channels and frames, squares
    (1, 0, 0, 9), mean 10 / 4 = 2.5, s = -1.25 (a mean over the last three dims alone would
    leave a [1, 2] tensor); a second row of zeros gives 0."""
    errors = torch.tensor([[1.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 2, 2, 1, 1)
    values = per_sample(errors, torch.zeros_like(errors))
    assert values.shape == (2,)
    torch.testing.assert_close(values, torch.tensor([-1.25, 0.0]))


def test_computed_in_float32_from_half_precision_inputs():
    prediction = torch.full((1, 4, 2, 2), 1.0, dtype=torch.bfloat16)
    values = per_sample(prediction, torch.zeros_like(prediction))
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, torch.tensor([-0.5]))


def test_dpo_on_the_surrogate_is_diffusion_dpos_loss():
    """Per-sample MSEs: policy winner (0, 2) -> 2, loser (2, 2) -> 4; reference winner (1, 1) -> 1,
    loser (1, 3) -> 5. model_diff = 2 - 4 = -2, ref_diff = 1 - 5 = -4. Diffusion-DPO's loss
    -logsigmoid(-0.5 beta (model_diff - ref_diff)) at beta 0.5: -logsigmoid(-0.5) = log(1 + e^0.5)
    = 0.974077; the core's DPO on s = -0.5 MSE gives the same."""
    def values(winner, loser):
        errors = torch.tensor([winner, loser]).view(2, 1, 1, 2)
        return assemble(per_sample(errors, torch.zeros_like(errors)), rows=1, sides=2)

    loss = objectives.get("dpo")(values([0.0, 2.0], [2.0, 2.0]), values([1.0, 1.0], [1.0, 3.0]), beta=0.5).loss
    torch.testing.assert_close(loss, torch.tensor([math.log(1 + math.exp(0.5))]))


def test_side_major_and_assemble_lay_out_pairs_and_the_mismatched_term():
    """[B, S] = [2, 2] side-major is w0, w1, l0, l1; then B mismatched values."""
    pairs = torch.tensor([[0.0, 10.0], [1.0, 11.0]])  # row i: (winner, loser)
    torch.testing.assert_close(side_major(pairs), torch.tensor([0.0, 1.0, 10.0, 11.0]))
    sur = assemble(torch.tensor([0.0, 1.0, 10.0, 11.0, 20.0, 21.0]), rows=2, sides=2, has_mismatched=True)
    assert sur.chosen.tolist() == [0.0, 1.0] and sur.rejected.tolist() == [10.0, 11.0]
    assert sur.terms[KL_MISMATCHED].tolist() == [20.0, 21.0] and KL_MISMATCHED == "kl_mismatched"
    unpaired = assemble(torch.tensor([0.0, 1.0, 20.0, 21.0]), rows=2, sides=1, has_mismatched=True)
    assert unpaired.rejected is None and unpaired.terms["kl_mismatched"].tolist() == [20.0, 21.0]


def test_mismatched_condition_is_the_previous_rows():
    """Row i gets row i - 1's condition, row 0 the last row's; one row keeps its own."""
    condition = torch.tensor([[1.0], [2.0], [3.0]])
    assert mismatched(condition).flatten().tolist() == [3.0, 1.0, 2.0]
    assert mismatched(condition[:1]).flatten().tolist() == [1.0]
    assert mismatched(None) is None
