"""RRPO: refined sub-sequence rewards with a token-wise KL regulariser.

Sarkar & Etemad 2025, "Self-alignment of Large Video Language Models with Refined Regularized
Preference Optimization" (arXiv:2504.12083). Like DPO it contrasts a chosen and a rejected
response, but its reward counts only the sub-sequences (phrases) where the two responses
differ, and a per-token KL term on the chosen response keeps the policy near the reference.
The objective reads per-token terms and masks (``*_units``, ``*_mask``), the changed-token
fields of the pair and both models' vocabulary log-probs; it does not know what a unit is
made of (:mod:`mmalign.surrogate`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmalign.objectives.common import (pair_output, require_in, require_pairs, require_positive,
                                       require_reference)
from mmalign.objectives.spec import Context, objective
from mmalign.objectives.token_level import SIDES, _density, _masked_sum, _token_field, _token_kl, _tokens
from mmalign.surrogate import ObjectiveOutput, Surrogate

NAME = "rrpo"
#: the defaults: the official recipe for LLaVA-Video-7B (the LLaVA family this library's
#: vision-language modality trains); see :func:`rrpo` for the other models' values
BETA, ALPHA = 0.1, 0.01
NEEDS = frozenset({"token_logps", "vocab_logps", "fields:chosen_changed", "fields:rejected_changed"})


def _needs(params: dict[str, Any]) -> frozenset[str]:
    """Without the KL term (``alpha = 0``, the paper's "RRPO w/o D_TKL" ablation) no
    vocabulary log-probs are read, so a precomputed reference can serve it."""
    return NEEDS - {"vocab_logps"} if params.get("alpha", ALPHA) == 0 else NEEDS


def _run_starts(changed: Tensor) -> Tensor:
    """``[B, U]`` bool: true on the first token of each run of consecutive changed tokens."""
    return changed & ~F.pad(changed[:, :-1], (1, 0), value=False)


def subsequence_sums(values: Tensor, changed: Tensor) -> Tensor:
    """Sums of ``values`` over each maximal run of consecutive ``changed`` tokens.

    ``values`` and ``changed`` are ``[B, U]``; ``changed`` must be false outside the response.
    Entry ``k`` of a row is the sum over the row's ``(k + 1)``-th run, 0 past its last run, so
    the result is ``[B, U]`` (a row has at most ``ceil(U / 2)`` runs) and its row sums are the
    masked sums. Values outside every run (padding, even inf or nan) never reach a sum.
    """
    changed = changed.bool()
    run = (_run_starts(changed).long().cumsum(-1) - 1).clamp(min=0)
    kept = torch.where(changed, values, torch.zeros_like(values))
    return torch.zeros_like(kept).scatter_add(-1, run, kept)


@objective(NAME, needs=NEEDS, needs_fn=_needs,
           citation="Sarkar & Etemad 2025, Self-alignment of Large Video Language Models with Refined "
                    "Regularized Preference Optimization (arXiv:2504.12083)")
def rrpo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
         beta: float = BETA, alpha: float = ALPHA) -> ObjectiveOutput:
    """RRPO (Sarkar & Etemad 2025, arXiv:2504.12083, section 3).

    For input ``x``, chosen response ``y+`` and rejected response ``y-``, let ``y+_i`` and
    ``y-_i`` (``i = 1..N``) be the aligned sub-sequences where the two responses differ,
    ``y_i`` spanning tokens ``s_i..e_i``. The refined reward of a sub-sequence is::

        r(x, y_i) = beta * sum_{j = s_i}^{e_i} [log pi(t_j | x, t_<j) - log ref(t_j | x, t_<j)]

    the reward margin sums the sub-sequence margins, and the token-wise KL sums over every
    token of the chosen response::

        u = sum_{i=1}^{N} [r(x, y+_i) - r(x, y-_i)]
        D_TKL(x, y+) = sum_{t=1}^{|y+|} KL(ref(. | x, y+_<t) || pi(. | x, y+_<t))
        L = -log sigmoid(u) + alpha * D_TKL(x, y+)

    ``beta`` scales the rewards; ``alpha`` weighs the KL, which ``beta`` does not scale.

    Sub-sequences. The paper has an LLM mark the key differing phrases of both responses;
    here they are the changed tokens of the pair (fields ``chosen_changed`` /
    ``rejected_changed``, ``[B, U]`` bool), which a token modality derives from a token-level
    diff of the two responses, so each differing span is one sub-sequence and a span that one
    side inserts faces an empty counterpart of reward 0. The loss depends on the
    sub-sequences only through ``u = sum_i r(y+_i) - sum_i r(y-_i)``: how they pair up does
    not matter (the authors' code sums the per-phrase margins the same way). A pair whose
    responses do not differ has ``u = 0``.

    Sources and choices. The project page of the official repository
    (``pritamqu/RRPO``, ``docs/index.html``) writes the objective as
    ``-E[log sigmoid(u) + alpha * D_TKL(x, y+)]``; read literally, minimising that would push
    the policy *away* from the reference, the opposite of the regulariser the paper
    describes. The authors' code (``llava/losses.py``, ``RRPO.loss``) adds the KL to the
    loss, ``-logsigmoid(beta * u) + alpha * chosen_kl``, and that is what is implemented. As
    in that code, the reported implicit rewards are each side's summed sub-sequence rewards
    ``beta * sum_i log-ratio(y_i)`` (so the reward margin is ``u``), and the KL is summed,
    not averaged, over the chosen response.

    Defaults. The official training scripts use ``beta = 0.1, alpha = 0.01`` for
    LLaVA-Video-7B (the defaults here), ``beta = 0.5, alpha = 0.05`` for LongVU-7B and
    ``beta = 0.9, alpha = 0.01`` for VideoChat2-7B; the code suggests ``beta`` in 0.1-0.9 and
    ``alpha`` in 0.01-0.1. ``alpha = 0`` drops the KL term (the paper's ablation without
    ``D_TKL``); then vocabulary log-probs are not needed.

    The reference is required and, while ``alpha > 0``, must run live: its ``[B, U, V]``
    vocabulary log-probs cannot be stored, so a precomputed reference is refused.
    """
    require_positive(NAME, beta=beta)
    require_in(NAME, "alpha", alpha, 0.0, math.inf)
    reference = require_reference(reference, NAME)
    require_pairs(policy, reference, NAME)
    rewards, differs, metrics = [], [], {}
    for side in SIDES:
        pol, mask = _tokens(policy, side, "policy", NAME)
        ref, _ = _tokens(reference, side, "reference", NAME)
        changed = _token_field(ctx, f"{side}_changed", mask, NAME,
                               "true on tokens of the sub-sequences where chosen and rejected differ")
        rewards.append(beta * subsequence_sums(pol - ref, changed).sum(-1))
        differs.append(changed.any(-1))
        metrics[f"rrpo/changed_{side}"] = _density(mask, changed)
        metrics[f"rrpo/subsequences_{side}"] = _run_starts(changed).sum(-1).float()
    # pairs without any differing token carry no preference signal (u = 0)
    metrics["rrpo/unchanged_rows"] = (~(differs[0] | differs[1])).float()
    chosen_reward, rejected_reward = rewards
    loss = -F.logsigmoid(chosen_reward - rejected_reward)
    if alpha > 0:
        _, chosen_mask = _tokens(policy, "chosen", "policy", NAME)
        kl = _masked_sum(_token_kl(policy, reference, "chosen", NAME), chosen_mask)
        loss = loss + alpha * kl
        metrics["kl/chosen"] = kl
    return pair_output(policy, loss, chosen_reward, rejected_reward, **metrics)
