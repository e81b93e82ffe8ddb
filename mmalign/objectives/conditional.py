"""Objectives that contrast the chosen response under a second condition.

The condition is whatever the response is generated from besides the prompt: an image, a
video, an audio clip. The modality fills two neutral terms, ``[B]`` log-likelihoods of the
chosen response given the prompt and *another* condition:

* ``chosen|condition=corrupted`` (need ``terms:chosen|condition=corrupted``): a corrupted copy
  of the condition, or the row's rejected condition when it has one: a cropped or masked
  image, a video with shuffled or dropped frames, audio with masked spans (mDPO);
* ``chosen|condition=retrieved`` (need ``terms:chosen|condition=retrieved``): a retrieved,
  similar but different condition (Re-Align's rDPO).

An objective here never knows which kind of condition it is.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mmalign.errors import ConfigError
from mmalign.objectives.common import dpo_logistic, pair_output, require_pairs, require_positive, require_reference
from mmalign.objectives.spec import Context, log_ratios, objective
from mmalign.surrogate import ObjectiveOutput, Surrogate

#: term names (``Surrogate.terms`` keys); the needs are ``terms:`` + these
CORRUPTED = "chosen|condition=corrupted"
RETRIEVED = "chosen|condition=retrieved"


def _term(surrogate: Surrogate, key: str, which: str, name: str) -> Tensor:
    """Named extra ``[B]`` log-likelihood ``key`` of the ``which`` model."""
    if key not in surrogate.terms:
        raise ConfigError(
            f"objective '{name}' needs the log-likelihood term '{key}' (need 'terms:{key}'), but "
            f"the {which} surrogate has {sorted(surrogate.terms) or 'no terms'}. Use a modality "
            "that can fill this term"
        )
    return surrogate.terms[key]


def _three_ratios(policy: Surrogate, reference: Surrogate | None, key: str, name: str,
                  beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """The log-ratios ``lr(y_w | m)``, ``lr(y_l | m)`` and ``lr(y_w | other condition)``, ``[B]``
    each, with ``lr = log pi - log ref``, after the checks both objectives make."""
    require_positive(name, beta=beta)
    reference = require_reference(reference, name)
    require_pairs(policy, reference, name)
    chosen_lr, rejected_lr = log_ratios(policy, reference)
    other_lr = _term(policy, key, "policy", name) - _term(reference, key, "reference", name)
    return chosen_lr, rejected_lr, other_lr


@objective("mdpo", needs=(f"terms:{CORRUPTED}",),
           citation="Wang et al. 2024, mDPO: Conditional Preference Optimization for Multimodal "
                    "Large Language Models (arXiv:2406.11839)")
def mdpo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
         beta: float = 0.1, delta: float = 0.0) -> ObjectiveOutput:
    """mDPO (Wang et al. 2024, arXiv:2406.11839, section 3).

    With ``r(y | m) = beta * (log pi(y | m, q) - log ref(y | m, q))``, ``m`` the image and
    ``m'`` a corrupted copy of it (term ``chosen|condition=corrupted``)::

        L_DPO   = -log sigmoid(r(y_w | m) - r(y_l | m))
        L_CoPO  = -log sigmoid(r(y_w | m) - r(y_w | m'))     conditional preference
        L_AncPO = -log sigmoid(r(y_w | m) - delta)           reward anchor
        L_mDPO  = L_DPO + L_CoPO + L_AncPO

    The conditional term makes the model prefer the chosen answer *because of* the image; the
    anchor keeps the chosen reward above ``delta`` (0 in the paper), so the chosen likelihood
    does not fall while the margin grows.
    """
    chosen_lr, rejected_lr, corrupted_lr = _three_ratios(policy, reference, CORRUPTED, "mdpo", beta)
    dpo_loss = dpo_logistic(chosen_lr, rejected_lr, beta)
    conditional_loss = dpo_logistic(chosen_lr, corrupted_lr, beta)
    anchor_loss = -F.logsigmoid(beta * chosen_lr - delta)
    return pair_output(policy, dpo_loss + conditional_loss + anchor_loss, beta * chosen_lr,
                       beta * rejected_lr, **{"rewards/corrupted": beta * corrupted_lr,
                                              "loss/dpo": dpo_loss, "loss/conditional": conditional_loss,
                                              "loss/anchor": anchor_loss})


@objective("rdpo", needs=(f"terms:{RETRIEVED}",),
           citation="Xing et al. 2025, Re-Align: Aligning Vision Language Models via "
                    "Retrieval-Augmented Direct Preference Optimization (arXiv:2502.13146)")
def rdpo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
         beta: float = 0.1) -> ObjectiveOutput:
    """rDPO of Re-Align (Xing et al. 2025, arXiv:2502.13146, section 3).

    DPO plus a visual preference term: the same chosen response is preferred under the
    original image ``m`` over a retrieved, similar but different image ``m*`` (term
    ``chosen|condition=retrieved``)::

        L_rDPO = -log sigmoid(beta * [lr(y_w | m) - lr(y_l | m)])
                 -log sigmoid(beta * [lr(y_w | m) - lr(y_w | m*)])

    with ``lr(y | m) = log pi(y | m, x) - log ref(y | m, x)``. The authors' reference code
    scores tokens other than the label tokens (a label / log-prob misalignment); here every
    term is the real log-probability of the label tokens, as the formula states.
    """
    chosen_lr, rejected_lr, retrieved_lr = _three_ratios(policy, reference, RETRIEVED, "rdpo", beta)
    text_loss = dpo_logistic(chosen_lr, rejected_lr, beta)
    visual_loss = dpo_logistic(chosen_lr, retrieved_lr, beta)
    return pair_output(policy, text_loss + visual_loss, beta * chosen_lr, beta * rejected_lr,
                       **{"rewards/retrieved": beta * retrieved_lr, "loss/text": text_loss,
                          "loss/visual": visual_loss})
