"""sft: per-token mean NLL of the chosen response, -sum_t log p_t / |y_w| (TRL's convention)."""
from __future__ import annotations

import pytest
import torch

from mmalign.errors import DataError
from mmalign.objectives import get
from mmalign.surrogate import Surrogate


def from_tokens(units: list[list[float]], lengths: list[int]):
    """Per-token log-probs padded with zeros past each length, their mask and their masked sum."""
    units_t = torch.tensor(units, dtype=torch.float64)
    mask = torch.arange(units_t.shape[1]) < torch.tensor(lengths)[:, None]
    return units_t, mask, (units_t * mask).sum(-1)


def test_sft_is_the_per_token_mean_nll_of_the_chosen_response():
    # row 0: tokens [-0.5, -1.5]         -> -(-2.0) / 2 = 1.0
    # row 1: tokens [-0.5, -0.25, -0.75] -> -(-1.5) / 3 = 0.5
    units, mask, total = from_tokens([[-0.5, -1.5, 0.0], [-0.5, -0.25, -0.75]], [2, 3])
    policy = Surrogate(chosen=total, chosen_units=units, chosen_mask=mask)
    out = get("sft")(policy, None)
    expected = torch.tensor([1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(out.loss, expected, atol=1e-12, rtol=1e-12)
    # the reward is the mean token log-prob; unpaired rows report the chosen side only
    assert out.rejected_reward is None and "rewards/accuracies" not in out.metrics


def test_sft_on_pairs_reports_per_token_preference():
    # chosen means [-1.0, -0.5], rejected sums [-1.0, -3.0] over lengths [2, 2] -> means [-0.5, -1.5]
    # margins [-0.5, 1.0] -> accuracy 1/2
    _, mask, total = from_tokens([[-0.5, -1.5, 0.0], [-0.5, -0.25, -0.75]], [2, 3])
    policy = Surrogate(chosen=total, rejected=torch.tensor([-1.0, -3.0], dtype=torch.float64),
                       chosen_mask=mask, rejected_mask=torch.ones(2, 2, dtype=torch.bool))
    out = get("sft")(policy, None)
    assert out.metrics["rewards/accuracies"].item() == pytest.approx(0.5, abs=1e-12)
    assert out.metrics["rewards/margins"].item() == pytest.approx((-0.5 + 1.0) / 2, abs=1e-12)


def test_sft_refuses_an_empty_response():
    _, mask, total = from_tokens([[-0.5, -1.5], [0.0, 0.0]], [2, 0])
    with pytest.raises(DataError, match=r"chosen response of batch rows \[1\] is empty"):
        get("sft")(Surrogate(chosen=total, chosen_mask=mask), None)


# -- a surrogate without units (diffusion) ---------------------------------------------------

def test_sft_without_units_is_minus_the_per_sample_surrogate():
    # a diffusion surrogate s = -0.5 * mse per sample, no tokens: loss = -s_w = 0.5 * mse_w
    # s_w = [-0.3, -0.1] -> loss [0.3, 0.1]
    policy = Surrogate(chosen=torch.tensor([-0.3, -0.1], dtype=torch.float64))
    out = get("sft")(policy, None)
    torch.testing.assert_close(out.loss, torch.tensor([0.3, 0.1], dtype=torch.float64), atol=1e-12, rtol=0)
    assert out.rejected_reward is None and "rewards/accuracies" not in out.metrics


def test_sft_without_units_on_pairs_reports_the_surrogates():
    # s_w = [-0.3, -0.1], s_l = [-0.2, -0.4]: loss [0.3, 0.1], margins [-0.1, 0.3] -> mean 0.1,
    # accuracy 1/2; the gradient of the summed loss is -1 on each chosen value, 0 on rejected
    chosen = torch.tensor([-0.3, -0.1], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([-0.2, -0.4], dtype=torch.float64, requires_grad=True)
    out = get("sft")(Surrogate(chosen=chosen, rejected=rejected), None)
    torch.testing.assert_close(out.loss.detach(), torch.tensor([0.3, 0.1], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    assert out.metrics["rewards/margins"].item() == pytest.approx(0.1, abs=1e-12)
    assert out.metrics["rewards/accuracies"].item() == pytest.approx(0.5, abs=1e-12)
    out.loss.sum().backward()
    assert chosen.grad.tolist() == [-1.0, -1.0] and rejected.grad is None


def test_sft_needs_token_units_optionally():
    """A diffusion modality (no token_logps) passes the config check for sft and dpo + 2 sft;
    a token modality is asked for its units."""
    from mmalign.modality import check_needs
    from mmalign.objectives import get_spec, requested_needs
    from mmalign.objectives.compose import compose

    diffusion_needs = frozenset({"label", "terms:kl_mismatched"})  # image_diffusion's supported_needs
    token_needs = frozenset({"token_logps", "vocab_logps", "hidden", "label", "terms:kl_mismatched"})
    spec = get_spec("sft")
    assert spec.needs == set() and spec.optional_needs == {"token_logps"}
    for objective in (compose([("sft", 1.0)]), compose([("dpo", 1.0, {"beta": 2000.0}), ("sft", 2.0)])):
        check_needs(type("Diffusion", (), {"supported_needs": diffusion_needs})(), objective.needs, "diffusion")
        assert requested_needs(objective.needs, objective.optional_needs, diffusion_needs) == set()
        assert requested_needs(objective.needs, objective.optional_needs, token_needs) == {"token_logps"}
