"""Pairwise objectives without a reference model: SimPO, CPO, ORPO.

They use the policy's own log-likelihoods ``log pi(y)``; any ``reference`` passed in is
ignored (their spec says ``reference="none"``, so the trainer does not compute one).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmalign.errors import DataError
from mmalign.objectives.common import (
    mean_logps,
    pair_output,
    require_in,
    require_pairs,
    require_positive,
    smoothed_logistic,
)
from mmalign.objectives.spec import Context, objective
from mmalign.surrogate import ObjectiveOutput, Surrogate


@objective("simpo", needs=("token_logps",), reference="none",
           citation="Meng et al. 2024, SimPO: Simple Preference Optimization with a Reference-Free "
                    "Reward (arXiv:2405.14734)")
def simpo(policy: Surrogate, reference: Surrogate | None = None, ctx: Context | None = None, *,
          beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0) -> ObjectiveOutput:
    """SimPO (Meng et al. 2024, arXiv:2405.14734).

    The reward is the length-normalised log-likelihood ``s = beta / |y| * log pi(y)``; with a
    target margin ``gamma``:
    ``loss = -log sigmoid(s_w - s_l - gamma)`` (label smoothing as in conservative DPO).
    """
    require_positive("simpo", beta=beta)
    require_in("simpo", "label_smoothing", label_smoothing, 0.0, 1.0, closed_high=True)
    require_pairs(policy, None, "simpo")
    s_w = beta * mean_logps(policy, "chosen", "simpo")
    s_l = beta * mean_logps(policy, "rejected", "simpo")
    loss = smoothed_logistic(s_w - s_l - gamma, label_smoothing)
    return pair_output(policy, loss, s_w, s_l)


@objective("cpo", needs=("token_logps",), reference="none",
           citation="Xu et al. 2024, Contrastive Preference Optimization: Pushing the Boundaries "
                    "of LLM Performance in Machine Translation (arXiv:2401.08417)")
def cpo(policy: Surrogate, reference: Surrogate | None = None, ctx: Context | None = None, *,
        beta: float = 0.1, nll_weight: float = 1.0, label_smoothing: float = 0.0) -> ObjectiveOutput:
    """CPO (Xu et al. 2024, arXiv:2401.08417): DPO without a reference plus a
    likelihood term on the chosen response.

    ``loss = -log sigmoid(beta * (log pi(y_w) - log pi(y_l))) + nll_weight * NLL(y_w)``,
    ``NLL(y_w) = -log pi(y_w) / |y_w|``. The paper writes the sequence NLL; TRL's CPO trainer
    averages it over tokens, which keeps the two terms on one scale, and so do we.
    """
    require_positive("cpo", beta=beta)
    require_in("cpo", "label_smoothing", label_smoothing, 0.0, 1.0, closed_high=True)
    require_pairs(policy, None, "cpo")
    nll = -mean_logps(policy, "chosen", "cpo")
    s_w, s_l = beta * policy.chosen, beta * policy.rejected
    loss = smoothed_logistic(s_w - s_l, label_smoothing) + nll_weight * nll
    return pair_output(policy, loss, s_w, s_l, nll=nll)


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends (Maechler 2012): ``expm1``
    near 0, where ``1 - exp(x)`` cancels, and ``log1p`` far below it.

    Each branch only sees inputs of its own range (the other rows get a harmless -1): a
    ``where`` sends a zero gradient into the branch it does not select, and ``0`` times the
    infinite derivative of ``log1p(-exp(x))`` at ``exp(x) = 1`` (``x`` within ~6e-8 of 0 in
    float32) would be nan."""
    near = x > -0.6931471805599453
    safe = torch.full_like(x, -1.0)
    return torch.where(near, torch.log(-torch.expm1(torch.where(near, x, safe))),
                       torch.log1p(-torch.exp(torch.where(near, safe, x))))


def _log_odds(mean_logp: Tensor, side: str) -> Tensor:
    """``log(p / (1 - p)) = log p - log(1 - p)`` of the per-token mean probability ``p``."""
    if bool((mean_logp > 0).any()):
        rows = (mean_logp > 0).nonzero().flatten().tolist()
        raise DataError(f"orpo: the {side} mean log-probability of batch rows {rows} is positive, "
                        "so it is not a log-probability",
                        hint="orpo needs token log-probabilities; use it with a token modality")
    # a response of probability exactly 1 has infinite odds; the smallest step below 0 keeps
    # them finite without touching any other value
    mean_logp = mean_logp.clamp(max=-torch.finfo(mean_logp.dtype).tiny)
    return mean_logp - log1mexp(mean_logp)


@objective("orpo", needs=("token_logps",), reference="none",
           citation="Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference "
                    "Model (arXiv:2403.07691)")
def orpo(policy: Surrogate, reference: Surrogate | None = None, ctx: Context | None = None, *,
         beta: float = 0.1) -> ObjectiveOutput:
    """ORPO (Hong et al. 2024, arXiv:2403.07691); ``beta`` is the paper's lambda.

    With per-token mean log-probabilities ``m = log pi(y) / |y|`` and
    ``log odds(y) = m - log(1 - exp(m))``:
    ``loss = -m_w - beta * log sigmoid(log odds(y_w) - log odds(y_l))``,
    the first term being the per-token mean NLL of the chosen response. Rewards are
    ``beta * m``.
    """
    require_positive("orpo", beta=beta)
    require_pairs(policy, None, "orpo")
    m_w = mean_logps(policy, "chosen", "orpo")
    m_l = mean_logps(policy, "rejected", "orpo")
    log_odds_ratio = _log_odds(m_w, "chosen") - _log_odds(m_l, "rejected")
    loss = -m_w - beta * F.logsigmoid(log_odds_ratio)
    return pair_output(policy, loss, beta * m_w, beta * m_l, nll=-m_w, log_odds_ratio=log_odds_ratio)
