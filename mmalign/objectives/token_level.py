"""Token-level and dense preference objectives.

Each objective here weighs, masks or regularises the per-token terms of a surrogate
(``*_units`` with ``*_mask``, ``[B, U]``) instead of only its summed log-likelihoods, or
(the units of a surrogate are tokens, frames, latent frames or segments: see
:mod:`mmalign.surrogate`). None of them knows what a unit is made of. Objectives that contrast
the chosen response under a second condition (mDPO, rDPO) live in
:mod:`mmalign.objectives.conditional`.

Where the data lives:

* per-token batch fields (``fields:<name>``): ``ctx.fields[name]``, ``[B, U]`` bool, aligned
  with ``chosen_units`` / ``rejected_units``;
* vocabulary log-probs (``vocab_logps``): ``Surrogate.extras["vocab_logps_chosen"]`` and
  ``["vocab_logps_rejected"]``, ``[B, U, V]``;
* hidden states (``hidden``): ``Surrogate.extras["hidden_chosen"]`` and
  ``["hidden_rejected"]``, ``[B, U, H]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmalign.errors import ConfigError, DataError
from mmalign.objectives.common import dpo_logistic, pair_output, require_pairs, require_positive, require_reference
from mmalign.objectives.spec import Context, log_ratios, objective
from mmalign.surrogate import ObjectiveOutput, Surrogate

SIDES = ("chosen", "rejected")


# -- reading what an objective asked for ------------------------------------------------------

def _tokens(surrogate: Surrogate, side: str, which: str, name: str) -> tuple[Tensor, Tensor]:
    """``side``'s per-token log-probs ``[B, U]`` and their bool mask."""
    units, mask = getattr(surrogate, f"{side}_units"), getattr(surrogate, f"{side}_mask")
    if units is None or mask is None:
        raise ConfigError(
            f"objective '{name}' works on per-token log-probs, but the {which} surrogate has no "
            f"{side}_units / {side}_mask. Use a modality that provides the 'token_logps' need"
        )
    return units, mask.bool()


def _token_field(ctx: Context | None, field: str, mask: Tensor, name: str, meaning: str) -> Tensor:
    """Per-token bool batch field ``field``, checked against the response shape ``[B, U]``."""
    fields = ctx.fields if ctx is not None else {}
    if field not in fields:
        raise DataError(
            f"objective '{name}' needs the per-token batch field '{field}' ({meaning}), but this "
            f"batch carries only {sorted(fields) or 'no fields'}", field=field,
            hint=f"Give every row a '{field}' list with one true/false per response token, or "
                 "pass ctx=Context(fields=...) when calling the objective directly")
    value = fields[field]
    if tuple(value.shape) != tuple(mask.shape):
        raise DataError(
            f"objective '{name}': the field has shape {tuple(value.shape)} but the responses have "
            f"shape {tuple(mask.shape)} (rows, tokens)", field=field,
            hint="Mark one entry per response token, counted with the modality's tokenizer")
    return value.to(mask.device).bool() & mask


def _extra(surrogate: Surrogate, key: str, which: str, name: str, need: str) -> Tensor:
    """Heavy extra ``key`` (vocabulary log-probs, hidden states) of the ``which`` model."""
    if key not in surrogate.extras:
        hint = (" A precomputed reference cannot store it: use reference.strategy copy or "
                "adapters_off" if which == "reference" else "")
        raise ConfigError(
            f"objective '{name}' needs extras['{key}'] (need '{need}') from the {which} model, "
            f"but its surrogate has {sorted(surrogate.extras) or 'no extras'}.{hint}"
        )
    return surrogate.extras[key]


def _masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum over tokens where ``mask``; ``where`` keeps padding (even inf/nan) out of it."""
    return torch.where(mask, values, torch.zeros_like(values)).sum(-1)


def _density(mask: Tensor, kept: Tensor) -> Tensor:
    """Share of response tokens a mask keeps (a weight's sum when ``kept`` is float)."""
    return (kept.float() * mask).sum() / mask.sum().clamp(min=1)


# -- RLHF-V's dense DPO ----------------------------------------------------------------------

@objective("dense_dpo", needs=("token_logps", "fields:chosen_changed", "fields:rejected_changed"),
           citation="Yu et al. 2023, RLHF-V: Towards Trustworthy MLLMs via Behavior Alignment from "
                    "Fine-grained Correctional Human Feedback (arXiv:2312.00849)")
def dense_dpo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
              beta: float = 0.5, gamma: float = 5.0) -> ObjectiveOutput:
    """Dense DPO, DDPO (Yu et al. 2023, RLHF-V, arXiv:2312.00849, section 3.2).

    Human corrections mark the segments that differ between the chosen (corrected) and the
    rejected (original) response: ``y_c`` (fields ``chosen_changed`` / ``rejected_changed``,
    ``[B, U]`` bool) and the unchanged rest ``y_u``. The response score is a weighted mean of
    token log-probs, changed tokens weighing ``gamma > 1``::

        log pi(y|x) = 1/N * [ sum_{t in y_u} log p(y_t|x, y_<t) + gamma * sum_{t in y_c} log p(y_t|x, y_<t) ]
        N = |y_u| + gamma * |y_c|

    computed alike for the policy and the reference, then the DPO loss
    ``-log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])``.
    Defaults are the paper's (``beta = 0.5``, ``gamma = 5``).
    """
    name = "dense_dpo"
    require_positive(name, beta=beta, gamma=gamma)
    reference = require_reference(reference, name)
    require_pairs(policy, reference, name)
    ratios, metrics = [], {}
    for side in SIDES:
        pol, mask = _tokens(policy, side, "policy", name)
        ref, _ = _tokens(reference, side, "reference", name)
        changed = _token_field(ctx, f"{side}_changed", mask, name,
                               "true on tokens of segments that differ between chosen and rejected")
        weight = torch.where(changed, gamma, 1.0).to(pol.dtype) * mask
        ratios.append(_masked_sum((pol - ref) * weight, mask) / weight.sum(-1))
        metrics[f"dense/changed_{side}"] = _density(mask, changed)
    loss = dpo_logistic(ratios[0], ratios[1], beta)
    return pair_output(policy, loss, beta * ratios[0], beta * ratios[1], **metrics)


# -- Mask-DPO -----------------------------------------------------------------------------------

@objective("mask_dpo", needs=("token_logps", "fields:chosen_token_mask", "fields:rejected_token_mask"),
           citation="Gu et al. 2025, Mask-DPO: Generalizable Fine-grained Factuality Alignment of "
                    "LLMs (arXiv:2503.02846)")
def mask_dpo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
             beta: float = 0.1) -> ObjectiveOutput:
    """Mask-DPO (Gu et al. 2025, arXiv:2503.02846, section 3).

    Sentence-level factuality labels become per-token masks: ``chosen_token_mask`` keeps the
    tokens of the chosen response's correct sentences, ``rejected_token_mask`` those of the
    rejected response's hallucinated sentences (fields, ``[B, U]`` bool)::

        u(y, m) = sum_t m_t * (log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t))
        L = -log sigmoid(beta * [u(y_w, m_w) - u(y_l, m_l)])

    so the chosen response's hallucinations are never rewarded and the rejected response's
    correct sentences never penalised. A side whose mask keeps no token contributes 0.
    """
    name = "mask_dpo"
    require_positive(name, beta=beta)
    reference = require_reference(reference, name)
    require_pairs(policy, reference, name)
    meanings = {"chosen": "true on tokens of the chosen response's correct sentences",
                "rejected": "true on tokens of the rejected response's hallucinated sentences"}
    ratios, metrics = [], {}
    for side in SIDES:
        pol, mask = _tokens(policy, side, "policy", name)
        ref, _ = _tokens(reference, side, "reference", name)
        kept = _token_field(ctx, f"{side}_token_mask", mask, name, meanings[side])
        ratios.append(_masked_sum(pol - ref, kept))
        metrics[f"mask/kept_{side}"] = _density(mask, kept)
    loss = dpo_logistic(ratios[0], ratios[1], beta)
    return pair_output(policy, loss, beta * ratios[0], beta * ratios[1], **metrics)


# -- sequential KL shared by TDPO and SparsePO ----------------------------------------------------

def _token_kl(policy: Surrogate, reference: Surrogate, side: str, name: str) -> Tensor:
    """``KL(ref(. | x, y_<t) || pi(. | x, y_<t))`` per token, ``[B, U]``.

    ``sum_v ref_v * (log ref_v - log pi_v)``; vocabulary entries the reference gives
    probability 0 contribute 0 (not ``0 * inf``).
    """
    key = f"vocab_logps_{side}"
    pol = _extra(policy, key, "policy", name, "vocab_logps")
    ref = _extra(reference, key, "reference", name, "vocab_logps")
    if pol.shape != ref.shape:
        raise ConfigError(f"objective '{name}': policy and reference extras['{key}'] differ in "
                          f"shape, {tuple(pol.shape)} vs {tuple(ref.shape)}; both models must "
                          "share one tokenizer and vocabulary")
    ref_p = ref.exp()
    terms = torch.where(ref_p > 0, ref_p * (ref - pol), torch.zeros_like(pol))
    return terms.sum(-1)


# -- TDPO ---------------------------------------------------------------------------------------

@objective("tdpo", needs=("token_logps", "vocab_logps"),
           citation="Zeng et al. 2024, Token-level Direct Preference Optimization (arXiv:2404.11999)")
def tdpo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
         beta: float = 0.1, alpha: float = 0.5, variant: str = "tdpo2") -> ObjectiveOutput:
    """TDPO1 / TDPO2 (Zeng et al. 2024, arXiv:2404.11999, eqs. 16-19).

    With the sequential KL ``D(x, y) = sum_t KL(ref(. | x, y_<t) || pi(. | x, y_<t))`` over the
    response tokens, computed from both models' vocabulary log-probs::

        u = beta * (log pi(y_w) / ref(y_w)) - beta * (log pi(y_l) / ref(y_l))
        TDPO1: L = -log sigmoid(u - beta * [D(x, y_l) - D(x, y_w)])
        TDPO2: L = -log sigmoid(u - alpha * beta * [D(x, y_l) - sg(D(x, y_w))])

    ``sg`` stops the gradient; ``alpha`` (0.5 in the paper) is used by TDPO2 only.
    The reference is required and must run live: its ``[B, U, V]`` vocabulary log-probs cannot
    be stored, so a precomputed reference is refused.

    Implicit rewards, as the authors' code reports them:
    ``r(y) = beta * (log pi(y) / ref(y) + D(x, y))`` for each side, so the reward margin is
    TDPO1's logit. (An earlier release reported DPO's ``beta * log-ratio`` here; the loss was
    right, the logged rewards, margins and accuracies were not.)
    """
    name = "tdpo"
    if variant not in ("tdpo1", "tdpo2"):
        raise ConfigError(f"objective '{name}': variant must be 'tdpo1' or 'tdpo2', got {variant!r}")
    require_positive(name, beta=beta, alpha=alpha)
    reference = require_reference(reference, name)
    require_pairs(policy, reference, name)
    chosen_lr, rejected_lr = log_ratios(policy, reference)
    seq_kl = []
    for side in SIDES:
        _, mask = _tokens(policy, side, "policy", name)
        seq_kl.append(_masked_sum(_token_kl(policy, reference, side, name), mask))
    chosen_kl, rejected_kl = seq_kl
    if variant == "tdpo1":
        penalty = rejected_kl - chosen_kl
    else:
        penalty = alpha * (rejected_kl - chosen_kl.detach())
    loss = -F.logsigmoid(beta * (chosen_lr - rejected_lr - penalty))
    return pair_output(policy, loss, beta * (chosen_lr + chosen_kl), beta * (rejected_lr + rejected_kl),
                       **{"kl/chosen": chosen_kl, "kl/rejected": rejected_kl})


# -- SparsePO -----------------------------------------------------------------------------------

class SparseMaskHeads(nn.Module):
    """SparsePO's learned token masks: ``m = ReLU(w . h + b)`` over a token's hidden state.

    One linear map gives two masks: output 0 weighs the rewards, output 1 the KL terms (used
    when the objective asks for independent masks). Its input size is taken from the first
    batch (a lazy linear layer), since the state is built before any model output is seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.LazyLinear(2)

    def forward(self, hidden: Tensor) -> Tensor:
        """``[B, U, H]`` hidden states -> ``[B, U, 2]`` non-negative, often exactly 0, masks.

        Hidden states come in the model's dtype (often bf16); the heads keep their own.
        """
        return F.relu(self.proj(hidden.to(self.proj.weight.dtype)))


def _activation_mask(hidden: Tensor, mask: Tensor) -> Tensor:
    """MaPO's reference-activation mask: each token's mean activation, min-max rescaled to
    ``[0, 1]`` over the response (the paper z-normalises first, which min-max scaling undoes).
    A response whose tokens all have the same activation gets weight 1 everywhere."""
    activation = hidden.mean(-1)
    low = torch.where(mask, activation, torch.full_like(activation, float("inf"))).amin(-1, keepdim=True)
    high = torch.where(mask, activation, torch.full_like(activation, float("-inf"))).amax(-1, keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (activation - low) / span.clamp(min=torch.finfo(span.dtype).tiny),
                         torch.ones_like(activation))
    return torch.where(mask, scaled, torch.zeros_like(scaled))


def _sparse_masks(reference: Surrogate, side: str, mask: Tensor, ctx: Context | None,
                  mask_source: str, independent: bool, name: str) -> tuple[Tensor, Tensor]:
    """``(reward mask, KL mask)`` of ``side``, each ``[B, U]`` and 0 outside the response."""
    hidden = _extra(reference, f"hidden_{side}", "reference", name, "hidden")
    if mask_source == "reference":
        common = _activation_mask(hidden, mask)
        return common, common
    if ctx is None or not isinstance(ctx.state, SparseMaskHeads):
        raise ConfigError(f"objective '{name}' with mask_source='learned' needs its mask heads in "
                          "ctx.state (made by the spec's make_state()); pass "
                          "ctx=Context(state=SparseMaskHeads()) when calling it directly")
    heads = ctx.state(hidden) * mask.unsqueeze(-1)
    return heads[..., 0], heads[..., 1 if independent else 0]


@objective("sparsepo", needs=("token_logps", "vocab_logps", "hidden"), make_state=SparseMaskHeads,
           citation="Christopoulou et al. 2024, SparsePO: Controlling Preference Alignment of LLMs "
                    "via Sparse Token Masks (arXiv:2410.05102)")
def sparsepo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
             beta: float = 0.1, mask_source: str = "learned",
             independent_masks: bool = False) -> ObjectiveOutput:
    """SparsePO (Christopoulou et al. 2024, arXiv:2410.05102, section 3).

    TDPO's objective with a token weight ``m_u`` on each reward term and ``m_d`` on each KL
    term, ``lr_t = log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)``,
    ``KL_t = KL(ref(. | x, y_<t) || pi(. | x, y_<t))``::

        u = sum_t m_u(y_w,t) lr_t(y_w) - sum_t m_u(y_l,t) lr_t(y_l)
        d = sum_t m_d(y_l,t) KL_t(y_l) - sum_t m_d(y_w,t) KL_t(y_w)
        L = -log sigmoid(beta * (u - d))

    Masks come from the reference model's hidden states ``extras["hidden_*"]``:

    * ``mask_source="reference"`` (MaPO): each token's mean activation, min-max rescaled to
      ``[0, 1]`` over the response; one mask for rewards and KL.
    * ``mask_source="learned"`` (SparsePO): ``m = ReLU(w . h + b)`` from the trainable
      :class:`SparseMaskHeads` in ``ctx.state``; ReLU makes masks exactly sparse. With
      ``independent_masks`` the KL gets its own head output, otherwise ``m_d = m_u``.

    Choices where the paper leaves room: the modality hands over one hidden-state tensor, so
    the activation mask averages over its features (the paper also averages over layers) and
    the learned head is one linear map, not one per layer mixed by a second linear map; as in
    the authors' code the learned heads read the reference model's hidden states; the
    optional L1 penalty on the masks of that code is not applied. Implicit rewards reported
    are ``beta`` times the masked log-ratio sums.
    """
    name = "sparsepo"
    if mask_source not in ("reference", "learned"):
        raise ConfigError(f"objective '{name}': mask_source must be 'reference' or 'learned', "
                          f"got {mask_source!r}")
    if independent_masks and mask_source != "learned":
        raise ConfigError(f"objective '{name}': independent_masks needs mask_source='learned' "
                          "(the reference-activation mask is a single mask)")
    require_positive(name, beta=beta)
    reference = require_reference(reference, name)
    require_pairs(policy, reference, name)
    rewards, kls, metrics = [], [], {}
    for side in SIDES:
        pol, mask = _tokens(policy, side, "policy", name)
        ref, _ = _tokens(reference, side, "reference", name)
        m_u, m_d = _sparse_masks(reference, side, mask, ctx, mask_source, independent_masks, name)
        rewards.append(_masked_sum(m_u * (pol - ref), mask))
        kls.append(_masked_sum(m_d * _token_kl(policy, reference, side, name), mask))
        metrics[f"mask/nonzero_{side}"] = _density(mask, m_u.detach() > 0)
        metrics[f"mask/mean_{side}"] = _density(mask, m_u.detach())
    u = rewards[0] - rewards[1]
    d = kls[1] - kls[0]
    loss = -F.logsigmoid(beta * (u - d))
    return pair_output(policy, loss, beta * rewards[0], beta * rewards[1],
                       **{"kl/chosen": kls[0], "kl/rejected": kls[1]})
