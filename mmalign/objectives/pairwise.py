"""Pairwise objectives with a reference model: DPO and the losses on its preference logit.

Each is a function of the log-ratios ``r_w = log pi(y_w) - log ref(y_w)`` and
``r_l = log pi(y_l) - log ref(y_l)``; most of ``h = r_w - r_l``. Implicit rewards are
``beta * r``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmalign.objectives.common import (
    lengths,
    pair_log_ratios,
    pair_output,
    require_in,
    require_positive,
    smoothed_logistic,
)
from mmalign.objectives.fdivergence import check_divergence, f_prime
from mmalign.objectives.spec import Context, objective
from mmalign.surrogate import ObjectiveOutput, Surrogate


@objective("dpo", citation="Rafailov et al. 2023, Direct Preference Optimization (arXiv:2305.18290); "
           "f-DPO: Wang et al. 2023, Beyond Reverse KL (arXiv:2309.16240)")
def dpo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
        beta: float = 0.1, label_smoothing: float = 0.0, divergence: str = "reverse_kl",
        alpha: float = 0.5, max_margin: float | None = None) -> ObjectiveOutput:
    """DPO, sigmoid loss (Rafailov et al. 2023, arXiv:2305.18290, eq. 7), with f-DPO's
    divergences (Wang et al. 2023, arXiv:2309.16240).

    ``h = beta * (f'(u_w) - f'(u_l))`` with ``u = pi / ref``;
    ``loss = -(1 - eps) * log sigmoid(h) - eps * log sigmoid(-h)``.
    With ``divergence="reverse_kl"`` (default) ``f'(u) = log u`` and ``h = beta * (r_w - r_l)``,
    plain DPO. ``eps = label_smoothing`` gives conservative DPO (Mitchell 2023). The other
    divergences (``forward_kl``, ``js``, ``alpha`` with ``alpha``) are in
    :mod:`mmalign.objectives.fdivergence`. Implicit rewards are ``beta * f'(u)``.

    On a diffusion surrogate ``s = -0.5 * mse`` this is Diffusion-DPO (Wallace et al. 2023,
    arXiv:2311.12908) and, on velocity errors, flow-matching DPO (Liu et al. 2025,
    arXiv:2501.13918): ``h = -0.5 * beta * ((mse_w - mse_w_ref) - (mse_l - mse_l_ref))``.

    ``max_margin`` (default None: plain DPO) caps the logit entering the loss,
    ``loss = -(1 - eps) * log sigmoid(min(h, m)) - eps * log sigmoid(-min(h, m))``: a pair
    whose margin exceeds ``m`` gets no gradient, so the loss stops pushing the rejected
    sample's likelihood down once the pair is won by ``m``. DPO's incentive to unlearn the
    rejected sample is otherwise unbounded; with diffusion surrogates, where one sample's
    error can grow without limit, this is what collapses on-policy flow-matching DPO: the
    SimpleTuner trainer caps the positive margin in its on-policy Flow-DPO after such a
    collapse, and flow_grpo's FLUX DPO runs spiked at low beta. With ``eps > 0`` the cap also
    removes label smoothing's pull back on pairs past it. The logged rewards and margins are
    the uncapped ones; ``margin_capped`` is the fraction of pairs past the cap.
    """
    require_positive("dpo", beta=beta)
    require_in("dpo", "label_smoothing", label_smoothing, 0.0, 1.0, closed_high=True)
    check_divergence("dpo", divergence, alpha)
    if max_margin is not None:
        require_positive("dpo", max_margin=max_margin)
    chosen_lr, rejected_lr = pair_log_ratios(policy, reference, "dpo")
    chosen_reward = beta * f_prime(chosen_lr, divergence, alpha)
    rejected_reward = beta * f_prime(rejected_lr, divergence, alpha)
    h = chosen_reward - rejected_reward
    if max_margin is None:
        return pair_output(policy, smoothed_logistic(h, label_smoothing), chosen_reward, rejected_reward)
    loss = smoothed_logistic(torch.clamp(h, max=max_margin), label_smoothing)
    return pair_output(policy, loss, chosen_reward, rejected_reward,
                       margin_capped=(h.detach() > max_margin).to(h.dtype))


@objective("robust", citation="Chowdhury et al. 2024, Provably Robust DPO (arXiv:2403.00409)")
def robust(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
           beta: float = 0.1, label_smoothing: float = 0.1) -> ObjectiveOutput:
    """Robust DPO (Chowdhury, Kini, Natarajan 2024, arXiv:2403.00409).

    An unbiased estimate of the DPO loss under preference labels flipped with rate
    ``eps = label_smoothing`` (in [0, 0.5)), with ``h = beta * (r_w - r_l)``:
    ``loss = [-(1 - eps) * log sigmoid(h) + eps * log sigmoid(-h)] / (1 - 2 eps)``.
    """
    require_positive("robust", beta=beta)
    require_in("robust", "label_smoothing", label_smoothing, 0.0, 0.5)
    chosen_lr, rejected_lr = pair_log_ratios(policy, reference, "robust")
    h = beta * (chosen_lr - rejected_lr)
    eps = label_smoothing
    loss = (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps)
    return pair_output(policy, loss, beta * chosen_lr, beta * rejected_lr)


@objective("ipo", needs=("token_logps",),
           needs_fn=lambda params: frozenset({"token_logps"}) if params.get("normalize", True) else frozenset(),
           citation="Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from "
                    "Human Preferences (arXiv:2310.12036)")
def ipo(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
        beta: float = 0.1, normalize: bool = True) -> ObjectiveOutput:
    """IPO (Azar et al. 2023, arXiv:2310.12036, eq. 17), ``beta`` being the paper's ``tau``.

    ``loss = (h - 1 / (2 beta))^2`` with ``h = r_w - r_l`` (no beta inside ``h``).
    ``normalize=False`` is the paper's form, on sequence log-likelihoods.
    ``normalize=True`` (default, as TRL) divides every log-likelihood by its response
    length first, ``r = (log pi(y) - log ref(y)) / |y|``, which keeps the target margin
    ``1 / (2 beta)`` independent of response length.
    """
    require_positive("ipo", beta=beta)
    chosen_lr, rejected_lr = pair_log_ratios(policy, reference, "ipo")
    if normalize:
        chosen_lr = chosen_lr / lengths(policy, "chosen", "ipo")
        rejected_lr = rejected_lr / lengths(policy, "rejected", "ipo")
    loss = (chosen_lr - rejected_lr - 1 / (2 * beta)) ** 2
    return pair_output(policy, loss, beta * chosen_lr, beta * rejected_lr)


@objective("hinge", citation="Zhao et al. 2023, SLiC-HF (arXiv:2305.10425); Liu et al. 2023, "
                              "Statistical Rejection Sampling Improves Preference Optimization "
                              "(arXiv:2309.06657)")
def hinge(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
          beta: float = 0.1) -> ObjectiveOutput:
    """Hinge loss of SLiC (Zhao et al. 2023, arXiv:2305.10425) on reference-normalised
    log-likelihoods, as RSO uses it (Liu et al. 2023, arXiv:2309.06657).

    ``loss = max(0, 1 - beta * (r_w - r_l))``: pairs whose scaled margin exceeds 1 stop
    contributing.
    """
    require_positive("hinge", beta=beta)
    chosen_lr, rejected_lr = pair_log_ratios(policy, reference, "hinge")
    loss = torch.relu(1 - beta * (chosen_lr - rejected_lr))
    return pair_output(policy, loss, beta * chosen_lr, beta * rejected_lr)


@objective("exo_pair", citation="Ji et al. 2024, Towards Efficient Exact Optimization of Language "
                                 "Model Alignment (arXiv:2402.00856)")
def exo_pair(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
             beta: float = 0.1, label_smoothing: float = 1e-3) -> ObjectiveOutput:
    """EXO, pairwise form (Ji et al. 2024, arXiv:2402.00856, eq. 16).

    The reverse KL from the model's preference distribution over the pair,
    ``(sigmoid(h), sigmoid(-h))`` with ``h = beta * (r_w - r_l)``, to the label distribution
    ``(1 - eps, eps)``:
    ``loss = sigmoid(h) * (log sigmoid(h) - log(1 - eps))
           + sigmoid(-h) * (log sigmoid(-h) - log eps)``.
    ``eps = label_smoothing`` must lie in (0, 1): with ``eps = 0`` the target puts no mass on
    the rejected response and the KL is infinite.
    """
    require_positive("exo_pair", beta=beta, label_smoothing=label_smoothing)
    require_in("exo_pair", "label_smoothing", label_smoothing, 0.0, 1.0)
    chosen_lr, rejected_lr = pair_log_ratios(policy, reference, "exo_pair")
    h = beta * (chosen_lr - rejected_lr)
    eps = label_smoothing
    loss = (torch.sigmoid(h) * (F.logsigmoid(h) - math.log(1 - eps))
            + torch.sigmoid(-h) * (F.logsigmoid(-h) - math.log(eps)))
    return pair_output(policy, loss, beta * chosen_lr, beta * rejected_lr)


@objective("discopop", citation="Chan et al. 2024, Discovering Preference Optimization Algorithms "
                                 "with and for Large Language Models (arXiv:2406.08414)")
def discopop(policy: Surrogate, reference: Surrogate, ctx: Context | None = None, *,
             beta: float = 0.1, tau: float = 0.05) -> ObjectiveOutput:
    """DiscoPOP, the log-ratio modulated loss (Chan et al. 2024, arXiv:2406.08414, eq. 5).

    With ``h = beta * (r_w - r_l)`` and the mixing weight ``m = sigmoid(h / tau)``:
    ``loss = (1 - m) * (-log sigmoid(h)) + m * exp(-h)``, a blend of the logistic (DPO) and
    exponential losses. ``m * exp(-h)`` is evaluated as ``exp(log sigmoid(h / tau) - h)`` so
    that a very negative ``h`` gives ``0 * inf`` as 0 rather than nan.
    """
    require_positive("discopop", beta=beta, tau=tau)
    chosen_lr, rejected_lr = pair_log_ratios(policy, reference, "discopop")
    h = beta * (chosen_lr - rejected_lr)
    logistic = torch.sigmoid(-h / tau) * F.softplus(-h)
    exponential = torch.exp(F.logsigmoid(h / tau) - h)
    return pair_output(policy, logistic + exponential, beta * chosen_lr, beta * rejected_lr)

