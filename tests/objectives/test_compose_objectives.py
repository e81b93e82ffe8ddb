"""Weighted sums of objectives: MPO (0.8 dpo + 0.2 bco_pair + 1.0 sft) and RPO (dpo + alpha sft).

Rows (float64; atol = rtol = 1e-12), beta = 0.5 for dpo and bco_pair:

    row  pi(y_w)  pi(y_l)  ref(y_w)  ref(y_l)  |y_w|  |y_l|
    0    -1.0     -2.0     -1.5      -1.5      2      1
    1    -2.0     -1.5     -1.0      -2.0      4      3

    r_w = [0.5, -1.0], r_l = [-0.5, 0.5]; s = beta r: s_w = [0.25, -0.5], s_l = [-0.25, 0.25]
    dpo      = log(1 + exp(-(s_w - s_l)))                              (s_w - s_l = [0.5, -0.75])
    bco_pair = log(1 + exp(-(s_w - delta))) + log(1 + exp(s_l - delta)),
               delta = mean(s_w, s_l) = (0.25 - 0.5 - 0.25 + 0.25) / 4 = -0.0625
    sft      = -pi(y_w) / |y_w| = [0.5, 0.5]
"""
from __future__ import annotations

import math

import pytest
import torch

from mmalign.errors import ConfigError
from mmalign.objectives import Context, get
from mmalign.objectives.bco import RewardShift
from mmalign.objectives.compose import compose
from mmalign.surrogate import Surrogate

TOL = dict(atol=1e-12, rtol=1e-12)
BETA = 0.5
S_W, S_L = [0.25, -0.5], [-0.25, 0.25]
DELTA = -0.0625


def surrogates() -> tuple[Surrogate, Surrogate]:
    def t(values) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64)

    chosen_mask = torch.arange(4) < torch.tensor([2, 4])[:, None]
    rejected_mask = torch.arange(4) < torch.tensor([1, 3])[:, None]
    policy = Surrogate(chosen=t([-1.0, -2.0]), rejected=t([-2.0, -1.5]),
                       chosen_mask=chosen_mask, rejected_mask=rejected_mask)
    reference = Surrogate(chosen=t([-1.5, -1.0]), rejected=t([-1.5, -2.0]),
                          chosen_mask=chosen_mask, rejected_mask=rejected_mask)
    return policy, reference


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


DPO = [softplus(-(win - lose)) for win, lose in zip(S_W, S_L)]
BCO = [softplus(-(win - DELTA)) + softplus(lose - DELTA) for win, lose in zip(S_W, S_L)]
SFT = [0.5, 0.5]


def mpo():
    return compose([("dpo", 0.8, {"beta": BETA}), ("bco_pair", 0.2, {"beta": BETA}), ("sft", 1.0, {})])


def test_mpo_is_the_weighted_sum_per_row():
    out = mpo()(*surrogates())
    expected = [0.8 * d + 0.2 * b + 1.0 * s for d, b, s in zip(DPO, BCO, SFT)]
    torch.testing.assert_close(out.loss, torch.tensor(expected, dtype=torch.float64), **TOL)
    # each term is logged under its name, and the unprefixed rewards are dpo's
    assert out.metrics["dpo/loss"].item() == pytest.approx(sum(DPO) / 2, abs=1e-12)
    assert out.metrics["bco_pair/loss"].item() == pytest.approx(sum(BCO) / 2, abs=1e-12)
    assert out.metrics["sft/loss"].item() == pytest.approx(0.5, abs=1e-12)
    assert out.metrics["bco_pair/reward_shift"].item() == pytest.approx(DELTA, abs=1e-12)
    margins = [win - lose for win, lose in zip(S_W, S_L)]
    assert out.metrics["rewards/margins"].item() == pytest.approx(sum(margins) / 2, abs=1e-12)
    torch.testing.assert_close(out.chosen_reward, torch.tensor(S_W, dtype=torch.float64), **TOL)


def test_rpo_is_dpo_plus_alpha_sft():
    alpha = 0.3
    out = compose([("dpo", 1.0, {"beta": BETA}), ("sft", alpha, {})])(*surrogates())
    expected = [d + alpha * s for d, s in zip(DPO, SFT)]
    torch.testing.assert_close(out.loss, torch.tensor(expected, dtype=torch.float64), **TOL)


def test_the_sum_declares_union_of_needs_strongest_reference_and_per_term_state():
    spec = mpo().spec
    # sft uses token units when the modality has them (optional need), so no term requires them
    assert spec.needs == set() and spec.optional_needs == {"token_logps"}
    assert spec.reference == "required"
    state = spec.make_state()
    assert list(state.keys()) == ["bco_pair"] and isinstance(state["bco_pair"], RewardShift)
    reference_free = compose([("simpo", 1.0, {}), ("sft", 0.5, {})])
    assert reference_free.spec.reference == "none" and reference_free.spec.make_state is None


def test_each_stateful_term_updates_its_own_state():
    objective = mpo()
    state = objective.spec.make_state()
    objective(*surrogates(), Context(state=state))
    assert state["bco_pair"].count.item() == 1
    assert state["bco_pair"].mean.item() == pytest.approx(DELTA, abs=1e-7)


def test_gradients_reach_the_policy_only():
    policy, reference = surrogates()
    policy.chosen.requires_grad_(True)
    policy.rejected.requires_grad_(True)
    mpo()(policy, reference).loss.sum().backward()
    assert policy.chosen.grad is not None and policy.rejected.grad is not None
    assert reference.chosen.grad is None and not reference.chosen.requires_grad


def test_a_name_used_twice_gets_indexed_keys():
    out = compose([("dpo", 0.5, {"beta": BETA}), ("dpo", 0.5, {"beta": 2 * BETA})])(*surrogates())
    assert "dpo_0/loss" in out.metrics and "dpo_1/loss" in out.metrics


def test_mapping_items_as_a_recipe_gives_them():
    a = compose([{"name": "dpo", "weight": 1.0, "params": {"beta": BETA}}, {"name": "sft", "weight": 0.3}])
    b = compose([("dpo", 1.0, {"beta": BETA}), ("sft", 0.3)])
    torch.testing.assert_close(a(*surrogates()).loss, b(*surrogates()).loss, **TOL)


def test_bad_items_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="has no parameter 'bta'; it takes: beta=0.1"):
        compose([("dpo", 1.0, {"bta": 0.1})])
    with pytest.raises(ConfigError, match="Did you mean 'dpo'"):
        compose([("dpoo", 1.0, {})])
    with pytest.raises(ConfigError, match="weight must be a finite number"):
        compose([("dpo", float("nan"), {})])
    with pytest.raises(ConfigError, match="paired and unpaired"):
        compose([("dpo", 1.0, {}), ("kto", 1.0, {})])
    with pytest.raises(ConfigError, match="needs a list"):
        compose([])


def test_a_single_term_equals_the_objective_alone():
    alone = get("dpo")(*surrogates(), beta=BETA)
    summed = compose([("dpo", 1.0, {"beta": BETA})])(*surrogates())
    torch.testing.assert_close(summed.loss, alone.loss, **TOL)


def test_needs_follow_parameters():
    """IPO needs response lengths only when it normalises by them (so diffusion can run it)."""
    from mmalign.objectives.compose import compose

    assert "token_logps" in compose([("ipo", 1.0, {})]).needs
    assert "token_logps" not in compose([("ipo", 1.0, {"normalize": False})]).needs
    # an optional need another term requires is simply required
    both = compose([("ipo", 1.0, {}), ("sft", 1.0, {})])
    assert both.needs == {"token_logps"} and both.optional_needs == set()
