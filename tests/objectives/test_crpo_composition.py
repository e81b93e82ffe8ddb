"""CRPO of TangoFlux (Hung et al. 2024, arXiv:2412.21037) is dpo(beta) + 2 * sft on the
flow-matching surrogate.

TangoFlux writes, with ``mse`` the per-sample mean squared velocity error (mean over every
non-batch dimension), ``theta`` the policy and ``ref`` the reference:

    inside = -0.5 * beta * ((mse_w_theta - mse_w_ref) - (mse_l_theta - mse_l_ref))
    L      = -log sigmoid(inside).mean() + mse_w_theta.mean()

The modality's surrogate is ``s = -0.5 * mse``. Derivation by hand:

* dpo's logit ``h = beta * ((s_w_theta - s_w_ref) - (s_l_theta - s_l_ref))``
  ``= beta * (-0.5) * ((mse_w_theta - mse_w_ref) - (mse_l_theta - mse_l_ref)) = inside``,
  so dpo's per-row loss ``-log sigmoid(h)`` is the first term per row;
* sft without units is ``-s_w_theta = 0.5 * mse_w_theta``, so ``2 * sft = mse_w_theta``;
* the trainer takes the batch mean of the per-row sum, and the mean of a sum is the sum of
  the means, so the batch loss is ``L``.

A recipe declares the sum as

    objective:
      - {name: dpo, weight: 1.0, params: {beta: 2000}}
      - {name: sft, weight: 2.0}
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import yaml

from mmalign.config import ObjectiveTerm
from mmalign.objectives.compose import compose
from mmalign.surrogate import Surrogate

BETA = 2000.0
RECIPE = f"""
objective:
  - {{name: dpo, weight: 1.0, params: {{beta: {BETA}}}}}
  - {{name: sft, weight: 2.0}}
"""


def crpo_from_recipe():
    """The sum as the trainer builds it from a recipe's objective list."""
    terms = [ObjectiveTerm(**item) for item in yaml.safe_load(RECIPE)["objective"]]
    return compose([(t.name, t.weight, t.params) for t in terms])


def velocity_data(seed: int = 0):
    """Targets and policy / reference predictions for winners and losers, [4, 2, 3, 3]."""
    gen = torch.Generator().manual_seed(seed)

    def rand():
        return torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64)

    target_w, target_l = rand(), rand()
    # predictions near the targets, so that the logit is of order one at beta = 2000
    ref_w, ref_l = target_w + 0.1 * rand(), target_l + 0.1 * rand()
    pol_w = (ref_w + 1e-3 * rand()).requires_grad_(True)
    pol_l = (ref_l + 1e-3 * rand()).requires_grad_(True)
    return target_w, target_l, pol_w, pol_l, ref_w, ref_l


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2).mean(dim=(1, 2, 3))


def tangoflux_loss(target_w, target_l, pol_w, pol_l, ref_w, ref_l) -> torch.Tensor:
    """TangoFlux's CRPO loss as the paper writes it."""
    mse_w_theta, mse_l_theta = mse(pol_w, target_w), mse(pol_l, target_l)
    mse_w_ref, mse_l_ref = mse(ref_w, target_w), mse(ref_l, target_l)
    inside = -0.5 * BETA * ((mse_w_theta - mse_w_ref) - (mse_l_theta - mse_l_ref))
    return -F.logsigmoid(inside).mean() + mse_w_theta.mean()


def surrogates(target_w, target_l, pol_w, pol_l, ref_w, ref_l) -> tuple[Surrogate, Surrogate]:
    """What a flow-matching modality returns: s = -0.5 * mse per sample, no units."""
    policy = Surrogate(chosen=-0.5 * mse(pol_w, target_w), rejected=-0.5 * mse(pol_l, target_l))
    reference = Surrogate(chosen=-0.5 * mse(ref_w, target_w), rejected=-0.5 * mse(ref_l, target_l))
    return policy, reference


def test_crpo_is_dpo_plus_two_sft():
    data = velocity_data()
    expected = tangoflux_loss(*data)
    objective = crpo_from_recipe()
    out = objective(*surrogates(*data))
    got = out.loss.mean()
    assert abs(got.item() - expected.item()) < 1e-12
    # the logit is of order one here, so both terms count
    assert 0.05 < out.metrics["dpo/loss"].item() < 5.0

    pol_w, pol_l = data[2], data[3]
    want = torch.autograd.grad(expected, (pol_w, pol_l))
    have = torch.autograd.grad(got, (pol_w, pol_l))
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_crpo_declares_no_token_need():
    objective = crpo_from_recipe()
    assert objective.name == "1*dpo + 2*sft"
    assert objective.needs == set() and objective.optional_needs == {"token_logps"}
    assert objective.reference == "required"
