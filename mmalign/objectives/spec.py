"""How an objective is declared: its function, what it needs, its reference, its state.

An objective is a plain function ``fn(policy, reference, ctx=None, **params) ->
ObjectiveOutput`` over :class:`~mmalign.surrogate.Surrogate` values, registered with
:func:`objective`. ``needs`` are data, not code paths: the trainer asks the modality once
for the union of the needs of every objective in a recipe.

Needs vocabulary:

* ``token_logps``: per-unit terms and masks (``*_units``, ``*_mask``), hence lengths;
* ``vocab_logps``: ``extras["vocab_logps_chosen"]`` / ``extras["vocab_logps_rejected"]``,
  ``[B, U, V]`` log-softmax over the vocabulary at each response token;
* ``hidden``: ``extras["hidden_chosen"]`` / ``extras["hidden_rejected"]``, ``[B, U, H]`` last
  hidden states at the response tokens;
* ``terms:<name>``: a named extra ``[B]`` log-likelihood in ``Surrogate.terms``;
* ``fields:<name>``: a per-row batch field from the data (``ctx.fields[name]``);
* ``label``: unpaired rows with desirable / undesirable labels.

Required and optional needs. ``needs`` are required: :func:`mmalign.modality.check_needs`
refuses, at config time, a modality that does not list one of them in ``supported_needs``.
``optional_needs`` are used when present and done without otherwise, so they are never
refused: ``sft`` takes the per-token mean when the surrogate carries token units and the
per-sample surrogate itself when it does not (a diffusion model's), so ``dpo + 2 * sft`` runs
on token and diffusion modalities alike. :func:`requested_needs` is what to ask a modality
for: the required needs and the optional ones it supports. (The built-in token modalities
fill units and masks whatever the needs say.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn

from mmalign.errors import DataError
from mmalign.registry import objectives as _registry

ReferenceUse = Literal["required", "optional", "none"]


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass
class Context:
    """What an objective receives besides the two surrogates.

    ``state``: the module made by the spec's ``make_state`` (owned by the trainer, so it is
    optimised and checkpointed). ``fields``: the batch fields asked for. ``all_reduce_mean``:
    averages a tensor over processes, for batch-level estimates (KTO's KL) that must agree
    across ranks; the identity on one process. ``step``: the optimiser step.
    """

    state: nn.Module | None = None
    fields: dict[str, Tensor] = field(default_factory=dict)
    all_reduce_mean: Callable[[Tensor], Tensor] = _identity
    training: bool = True
    step: int = 0


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    fn: Callable[..., Any]
    needs: frozenset[str] = frozenset()
    reference: ReferenceUse = "required"
    make_state: Callable[[], nn.Module] | None = None
    paired: bool = True  # False: unpaired rows with labels (KTO)
    citation: str = ""
    #: needs that depend on the parameters (IPO needs lengths only when normalising)
    needs_fn: Callable[[dict[str, Any]], frozenset[str]] | None = None
    #: needs used when the modality fills them and done without otherwise (never refused)
    optional_needs: frozenset[str] = frozenset()

    def needs_for(self, params: dict[str, Any]) -> frozenset[str]:
        return frozenset(self.needs_fn(params)) if self.needs_fn is not None else self.needs

    @property
    def needs_ctx(self) -> bool:
        return self.make_state is not None or any(n.startswith("fields:") for n in self.needs)


def objective(name: str, *, needs: tuple[str, ...] | frozenset[str] = (),
              reference: ReferenceUse = "required", make_state: Callable[[], nn.Module] | None = None,
              paired: bool = True, citation: str = "",
              needs_fn: Callable[[dict[str, Any]], frozenset[str]] | None = None,
              optional_needs: tuple[str, ...] | frozenset[str] = ()):
    """Register ``fn`` as objective ``name``; ``fn.spec`` holds the declaration.

    ``needs`` are what it needs with its default parameters; ``needs_fn(params)``, when
    given, says what it needs with the recipe's parameters. ``optional_needs`` are what it
    uses when a modality provides them and does without otherwise."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = ObjectiveSpec(name=name, fn=fn, needs=frozenset(needs), reference=reference,
                             make_state=make_state, paired=paired, citation=citation,
                             needs_fn=needs_fn, optional_needs=frozenset(optional_needs))
        fn.spec = spec  # type: ignore[attr-defined]
        _registry.register(name, spec)
        return fn

    return decorator


def get_spec(name: str) -> ObjectiveSpec:
    return _registry.get(name)


def get(name: str) -> Callable[..., Any]:
    """The callable of objective ``name``: ``fn(policy, reference, ctx=None, **params)``."""
    return get_spec(name).fn


def names() -> list[str]:
    return _registry.names()


def requested_needs(needs: frozenset[str], optional_needs: frozenset[str],
                    supported_needs: frozenset[str]) -> frozenset[str]:
    """What to ask a modality for: every required need, and each optional need that the
    modality lists in ``supported_needs`` (a ``terms:*`` entry there supports every term)."""
    supported = frozenset(supported_needs)
    filled = {n for n in optional_needs
              if n in supported or (n.startswith("terms:") and "terms:*" in supported)}
    return frozenset(needs) | filled


# -- helpers every objective uses ---------------------------------------------------------

def check_paired(policy, reference=None, name: str = "this objective") -> None:
    """Refuse unpaired surrogates and empty responses with a clear message."""
    if policy.rejected is None:
        raise DataError(f"{name} needs paired rows (chosen and rejected); got unpaired rows")
    for s, which in ((policy, "policy"), (reference, "reference")):
        if s is None:
            continue
        for side in ("chosen", "rejected"):
            mask = getattr(s, f"{side}_mask")
            if mask is not None and bool((mask.sum(-1) == 0).any()):
                rows = (mask.sum(-1) == 0).nonzero().flatten().tolist()
                raise DataError(
                    f"{name}: the {side} response of batch rows {rows} is empty "
                    f"({which} mask has no tokens); drop those rows or fix their data"
                )


def reward_metrics(policy, chosen_reward: Tensor, rejected_reward: Tensor | None) -> dict[str, Tensor]:
    """The metrics every objective reports. A tie counts 0.5 toward accuracy.

    On pairs, besides the mean margin ``rewards/margins``, its spread over the batch's pairs:
    ``rewards/margins_min``, ``rewards/margins_p50`` (the median) and ``rewards/margins_max``
    (a few pairs with runaway margins hide behind a modest mean). They are statistics of one
    micro-batch on one process, computed on the device without a host sync; the trainer logs
    their mean over the micro-batches of a step and over processes (order statistics of a
    batch cannot be combined exactly from those of its parts), so read them as "the smallest,
    median and largest margin of a typical micro-batch".
    """
    metrics = {"rewards/chosen": chosen_reward.detach().mean(),
               "logps/chosen": policy.chosen.detach().mean()}
    if rejected_reward is not None:
        margin = (chosen_reward - rejected_reward).detach()
        accuracy = (margin > 0).float() + 0.5 * (margin == 0).float()
        metrics.update({
            "rewards/rejected": rejected_reward.detach().mean(),
            "rewards/margins": margin.mean(),
            "rewards/accuracies": accuracy.mean(),
            "logps/rejected": policy.rejected.detach().mean(),
        })
        metrics.update(margin_spread(margin))
    return metrics


def margin_spread(margin: Tensor) -> dict[str, Tensor]:
    """Smallest, median and largest value of ``margin`` (any shape, at least one value):
    ``rewards/margins_{min,p50,max}``. The median of an even count is the mean of the two
    middle values. Sorting and indexing by a host-known position keep it on the device."""
    ordered = margin.detach().flatten().sort().values
    n = ordered.shape[0]
    return {"rewards/margins_min": ordered[0],
            "rewards/margins_p50": 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2]),
            "rewards/margins_max": ordered[n - 1]}


def log_ratios(policy, reference) -> tuple[Tensor, Tensor]:
    """``(log pi(y_w) - log ref(y_w), log pi(y_l) - log ref(y_l))``; reference may be None
    (then the reference log-likelihood is taken as 0, i.e. a reference-free objective)."""
    if reference is None:
        return policy.chosen, policy.rejected
    return policy.chosen - reference.chosen, policy.rejected - reference.rejected
