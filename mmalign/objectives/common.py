"""What every objective shares: input checks, response lengths and the output it returns.

The checks turn a malformed batch or recipe into a message that names the objective, the
rows and what to do, instead of a shape error from deep inside torch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mmalign.errors import ConfigError, DataError
from mmalign.objectives.spec import check_paired, log_ratios, reward_metrics
from mmalign.surrogate import ObjectiveOutput, Surrogate


def require_pairs(policy: Surrogate, reference: Surrogate | None, name: str) -> None:
    """Paired rows, no empty response, and ``[B]`` surrogates of one batch size."""
    check_paired(policy, reference, name)
    rows = policy.chosen.shape[0] if policy.chosen.dim() else 1
    for surrogate, which in ((policy, "policy"), (reference, "reference")):
        if surrogate is None:
            continue
        for side in ("chosen", "rejected"):
            value = getattr(surrogate, side)
            if value is None or tuple(value.shape) != (rows,):
                got = None if value is None else tuple(value.shape)
                raise DataError(
                    f"{name}: the {which} surrogate's '{side}' has shape {got}, expected ({rows},): "
                    "one value per batch row",
                    hint="policy and reference must be computed on the same batch",
                )


def require_reference(reference: Surrogate | None, name: str) -> Surrogate:
    """The reference surrogate, detached: a frozen model never receives gradients."""
    if reference is None:
        raise ConfigError(
            f"objective '{name}' needs a reference model (reference: required) but got none. "
            "Give the recipe a reference (or keep the default: the initial policy), or choose a "
            "reference-free objective such as simpo, cpo or orpo"
        )
    return reference.detach()


def pair_log_ratios(policy: Surrogate, reference: Surrogate | None, name: str) -> tuple[Tensor, Tensor]:
    """Checked ``(log pi(y_w) - log ref(y_w), log pi(y_l) - log ref(y_l))``."""
    reference = require_reference(reference, name)
    require_pairs(policy, reference, name)
    return log_ratios(policy, reference)


def lengths(surrogate: Surrogate, side: str, name: str) -> Tensor:
    """Number of response units of ``side`` per row, ``[B]`` float."""
    mask = getattr(surrogate, f"{side}_mask")
    if mask is None:
        raise ConfigError(
            f"objective '{name}' needs response lengths (need 'token_logps') but the surrogate has "
            f"no {side}_mask. Use a modality that provides token_logps, or an objective that "
            "needs only sequence log-likelihoods"
        )
    counts = mask.sum(-1).to(getattr(surrogate, side).dtype)
    if bool((counts == 0).any()):
        rows = (counts == 0).nonzero().flatten().tolist()
        raise DataError(f"{name}: the {side} response of batch rows {rows} is empty (no tokens)",
                        hint="drop those rows or fix their data")
    return counts


def mean_logps(surrogate: Surrogate, side: str, name: str) -> Tensor:
    """Length-normalised log-likelihood ``log p(y) / |y|`` of ``side``, ``[B]``."""
    return getattr(surrogate, side) / lengths(surrogate, side, name)


def require_positive(name: str, **values: float) -> None:
    for key, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"objective '{name}': {key} must be a positive number, got {value!r}")


def require_in(name: str, key: str, value: float, low: float, high: float, *,
               closed_high: bool = False) -> None:
    """``low <= value < high`` (``<= high`` when ``closed_high``)."""
    ok = isinstance(value, (int, float)) and low <= value and (
        value <= high if closed_high else value < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ConfigError(f"objective '{name}': {key} must lie in [{low}, {high}{bracket}, got {value!r}")


def dpo_logistic(chosen: Tensor, rejected: Tensor, beta: float) -> Tensor:
    """``-log sigmoid(beta * (chosen - rejected))``, the DPO loss of two log-ratios."""
    return -F.logsigmoid(beta * (chosen - rejected))


def smoothed_logistic(h: Tensor, label_smoothing: float) -> Tensor:
    """``-(1 - eps) * log sigmoid(h) - eps * log sigmoid(-h)``: the logistic loss on a
    preference logit whose label is flipped with probability ``eps`` (Mitchell 2023)."""
    return -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)


def pair_output(policy: Surrogate, loss: Tensor, chosen_reward: Tensor, rejected_reward: Tensor | None,
                **extra_metrics: Tensor) -> ObjectiveOutput:
    """An :class:`ObjectiveOutput` with detached rewards and the standard reward metrics."""
    chosen_reward = chosen_reward.detach()
    rejected_reward = None if rejected_reward is None else rejected_reward.detach()
    metrics = reward_metrics(policy, chosen_reward, rejected_reward)
    metrics.update({key: torch.as_tensor(value).detach().mean()
                    for key, value in extra_metrics.items()})
    return ObjectiveOutput(loss=loss, chosen_reward=chosen_reward, rejected_reward=rejected_reward,
                           metrics=metrics)
