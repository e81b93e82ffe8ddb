"""dpo's ``max_margin`` cap and the spread of the margins every pairwise objective logs.

Cap, by hand. beta = 1 and a reference of zeros, so the log-ratios are the policy values:

    r_w = [-1.0, -2.0, -1.5],  r_l = [-4.0, -2.5, -1.0]
    h   = r_w - r_l = [3.0, 0.5, -0.5]

With ``max_margin = 1`` the logit entering the loss is ``min(h, 1) = [1.0, 0.5, -0.5]`` and
``loss = -log sigmoid(min(h, 1)) = log(1 + exp(-min(h, 1)))``
``= [log(1 + e^-1), log(1 + e^-0.5), log(1 + e^0.5)]``. Pair 0 is past the cap: its loss is
flat in the policy, gradient 0; the others keep DPO's gradient
``d loss / d r_w = -sigmoid(-h) = -d loss / d r_l``. One pair in three is capped.
The logged margins are the uncapped ``h``: mean 1.0, min -0.5, median 0.5, max 3.0.
"""
from __future__ import annotations

import math

import pytest
import torch

from mmalign.errors import ConfigError
from mmalign.objectives import get, reward_metrics
from mmalign.objectives.compose import compose
from mmalign.surrogate import Surrogate

TOL = {"atol": 1e-12, "rtol": 0}


def pair(grad: bool = True) -> tuple[Surrogate, Surrogate]:
    def t(values):
        return torch.tensor(values, dtype=torch.float64, requires_grad=grad)

    policy = Surrogate(chosen=t([-1.0, -2.0, -1.5]), rejected=t([-4.0, -2.5, -1.0]))
    reference = Surrogate(chosen=torch.zeros(3, dtype=torch.float64), rejected=torch.zeros(3, dtype=torch.float64))
    return policy, reference


def test_max_margin_caps_the_logit():
    out = get("dpo")(*pair(), beta=1.0, max_margin=1.0)
    expected = [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(0.5))]
    torch.testing.assert_close(out.loss.detach(), torch.tensor(expected, dtype=torch.float64), **TOL)
    assert out.metrics["margin_capped"].item() == pytest.approx(1 / 3, abs=1e-12)
    # rewards and margins are reported uncapped
    assert out.metrics["rewards/margins"].item() == pytest.approx(1.0, abs=1e-12)
    assert out.metrics["rewards/margins_max"].item() == 3.0


def test_a_capped_pair_gets_no_gradient():
    policy, reference = pair()
    get("dpo")(policy, reference, beta=1.0, max_margin=1.0).loss.sum().backward()
    sig = [1 / (1 + math.exp(0.5)), 1 / (1 + math.exp(-0.5))]  # sigmoid(-h) for h = 0.5, -0.5
    torch.testing.assert_close(policy.chosen.grad, torch.tensor([0.0, -sig[0], -sig[1]], dtype=torch.float64), **TOL)
    torch.testing.assert_close(policy.rejected.grad, torch.tensor([0.0, sig[0], sig[1]], dtype=torch.float64), **TOL)


def test_max_margin_with_label_smoothing():
    # eps = 0.2, logits [1.0, 0.5, -0.5]: -(0.8) log s(x) - 0.2 log s(-x) = 0.8 sp(-x) + 0.2 sp(x)
    out = get("dpo")(*pair(grad=False), beta=1.0, max_margin=1.0, label_smoothing=0.2)

    def softplus(x):
        return math.log(1 + math.exp(x))

    expected = [0.8 * softplus(-x) + 0.2 * softplus(x) for x in (1.0, 0.5, -0.5)]
    torch.testing.assert_close(out.loss, torch.tensor(expected, dtype=torch.float64), **TOL)


def test_no_cap_is_plain_dpo_exactly():
    plain = get("dpo")(*pair(grad=False), beta=0.7)
    for cap in (None, 1e9):
        out = get("dpo")(*pair(grad=False), beta=0.7, max_margin=cap)
        assert torch.equal(out.loss, plain.loss)
    assert "margin_capped" not in plain.metrics


@pytest.mark.parametrize("cap", [0.0, -1.0, float("inf"), float("nan"), "1"])
def test_max_margin_must_be_a_positive_number(cap):
    with pytest.raises(ConfigError, match="max_margin"):
        get("dpo")(*pair(grad=False), max_margin=cap)


def test_a_recipe_sets_the_cap_in_a_sum():
    out = compose([("dpo", 1.0, {"beta": 1.0, "max_margin": 1.0}), ("sft", 2.0)])(*pair(grad=False))
    assert out.metrics["dpo/margin_capped"].item() == pytest.approx(1 / 3, abs=1e-12)


# -- spread of the margins --------------------------------------------------------------------

def test_margin_spread_of_an_even_batch():
    # margins [1, 4, 2, 3]: sorted [1, 2, 3, 4], median (2 + 3) / 2 = 2.5
    chosen = torch.tensor([1.0, 4.0, 2.0, 3.0], dtype=torch.float64)
    rejected = torch.zeros(4, dtype=torch.float64)
    metrics = reward_metrics(Surrogate(chosen=chosen, rejected=rejected), chosen, rejected)
    assert (metrics["rewards/margins_min"].item(), metrics["rewards/margins_p50"].item(),
            metrics["rewards/margins_max"].item()) == (1.0, 2.5, 4.0)
    assert all(metrics[f"rewards/margins_{k}"].dim() == 0 for k in ("min", "p50", "max"))


def test_margin_spread_of_one_pair_and_of_unpaired_rows():
    one = torch.tensor([-0.5], dtype=torch.float64)
    metrics = reward_metrics(Surrogate(chosen=one, rejected=one * 0), one, one * 0)
    assert metrics["rewards/margins_min"] == metrics["rewards/margins_p50"] == metrics["rewards/margins_max"] == -0.5
    assert "rewards/margins_min" not in reward_metrics(Surrogate(chosen=one), one, None)


def test_a_sum_reports_the_spread_of_its_lead_term():
    out = compose([("dpo", 1.0, {"beta": 1.0}), ("sft", 2.0)])(*pair(grad=False))
    # dpo's margins h = [3.0, 0.5, -0.5]
    assert (out.metrics["rewards/margins_min"].item(), out.metrics["rewards/margins_p50"].item(),
            out.metrics["rewards/margins_max"].item()) == (-0.5, 0.5, 3.0)
