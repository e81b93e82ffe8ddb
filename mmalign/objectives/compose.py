"""Weighted sums of objectives: per row, ``loss = sum_i w_i * loss_i``.

Recipes that are sums of published losses:

* MPO of InternVL (Wang et al. 2024, "Enhancing the Reasoning Ability of Multimodal Large
  Language Models via Mixed Preference Optimization", arXiv:2411.10442):
  ``compose([("dpo", 0.8, {}), ("bco_pair", 0.2, {}), ("sft", 1.0, {})])``;
* RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization", arXiv:2404.19733):
  ``compose([("dpo", 1.0, {}), ("sft", alpha, {})])``;
* CRPO of TangoFlux (Hung et al. 2024, "TangoFlux: Super Fast and Faithful Text to Audio
  Generation with Flow Matching and Clap-Ranked Preference Optimization", arXiv:2412.21037),
  on a flow-matching surrogate ``s = -0.5 * mse`` (``mse`` the per-sample mean squared
  velocity error): ``L = -log sigmoid(inside) + mse_w`` with
  ``inside = -0.5 * beta * ((mse_w - mse_w_ref) - (mse_l - mse_l_ref))``, which is
  ``compose([("dpo", 1.0, {"beta": beta}), ("sft", 2.0, {})])``: DPO's logit
  ``beta * ((s_w - s_w_ref) - (s_l - s_l_ref))`` is ``inside``, and ``2 * sft = -2 * s_w = mse_w``.

A :class:`ComposedObjective` is called like an objective and declares, through ``.spec``,
what a single objective declares: the union of the terms' needs, the union of their
optional needs (less those another term requires), the strongest reference requirement
(required > optional > none) and one state per term that has one.
"""
from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from mmalign.errors import ConfigError
from mmalign.objectives.spec import Context, ObjectiveSpec, ReferenceUse, get_spec
from mmalign.surrogate import ObjectiveOutput, Surrogate

_STRENGTH: dict[str, int] = {"none": 0, "optional": 1, "required": 2}


def check_params(spec: ObjectiveSpec, params: Mapping[str, Any]) -> None:
    """Refuse parameters the objective does not take, naming the ones it does."""
    signature = inspect.signature(spec.fn)
    accepted = [p for p in list(signature.parameters.values())[3:]
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    unknown = sorted(set(params) - {p.name for p in accepted})
    if unknown:
        takes = ", ".join(f"{p.name}={p.default!r}" for p in accepted) or "(no parameters)"
        raise ConfigError(f"objective '{spec.name}' has no parameter {', '.join(map(repr, unknown))}; "
                          f"it takes: {takes}")


@dataclass(frozen=True)
class Term:
    """One weighted objective of a sum. ``key`` names its metrics and its state."""

    key: str
    weight: float
    spec: ObjectiveSpec
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComposedObjective:
    """``sum_i w_i * objective_i``, callable as ``(policy, reference, ctx=None)``."""

    terms: tuple[Term, ...]

    @property
    def name(self) -> str:
        return " + ".join(f"{term.weight:g}*{term.spec.name}" for term in self.terms)

    @property
    def needs(self) -> frozenset[str]:
        return frozenset().union(*(term.spec.needs_for(dict(term.params)) for term in self.terms))

    @property
    def optional_needs(self) -> frozenset[str]:
        """Needs some term uses when present and no term requires."""
        return frozenset().union(*(term.spec.optional_needs for term in self.terms)) - self.needs

    @property
    def reference(self) -> ReferenceUse:
        return max((term.spec.reference for term in self.terms), key=_STRENGTH.__getitem__)

    @property
    def spec(self) -> ObjectiveSpec:
        """The sum's declaration, in the form the trainer reads for a single objective."""
        stateful = any(term.spec.make_state is not None for term in self.terms)
        citations = dict.fromkeys(term.spec.citation for term in self.terms if term.spec.citation)
        return ObjectiveSpec(name=self.name, fn=self, needs=self.needs, reference=self.reference,
                             make_state=self.make_state if stateful else None,
                             paired=self.terms[0].spec.paired, citation="; ".join(citations),
                             optional_needs=self.optional_needs)

    def make_state(self) -> nn.ModuleDict:
        """One state module per stateful term, keyed by the term's key."""
        return nn.ModuleDict({term.key: term.spec.make_state() for term in self.terms
                              if term.spec.make_state is not None})

    def __call__(self, policy: Surrogate, reference: Surrogate | None,
                 ctx: Context | None = None) -> ObjectiveOutput:
        outputs = [self._run(term, policy, reference, ctx) for term in self.terms]
        if len(self.terms) == 1 and self.terms[0].weight == 1.0:
            return outputs[0]  # a single objective reports as itself
        _check_rows(self.terms, outputs)
        loss = sum(term.weight * out.loss for term, out in zip(self.terms, outputs))
        lead = next((i for i, term in enumerate(self.terms) if term.spec.reference != "none"), 0)
        metrics = {key: value for key, value in outputs[lead].metrics.items()
                   if key.startswith(("rewards/", "logps/"))}
        for term, out in zip(self.terms, outputs):
            metrics[f"{term.key}/loss"] = out.loss.detach().mean()
            metrics.update({f"{term.key}/{key}": value for key, value in out.metrics.items()})
        return ObjectiveOutput(loss=loss, weight=_reduction_weight(self.terms, outputs),
                               chosen_reward=outputs[lead].chosen_reward,
                               rejected_reward=outputs[lead].rejected_reward, metrics=metrics)

    @staticmethod
    def _run(term: Term, policy: Surrogate, reference: Surrogate | None,
             ctx: Context | None) -> ObjectiveOutput:
        # a reference-free term never sees the reference, exactly as when it runs alone
        term_reference = None if term.spec.reference == "none" else reference
        term_ctx = None if ctx is None else replace(ctx, state=_term_state(ctx.state, term.key))
        return term.spec.fn(policy, term_reference, term_ctx, **term.params)


def compose(items: Sequence[Any]) -> ComposedObjective:
    """Build ``sum_i w_i * objective_i`` from ``(name, weight, params)`` items.

    An item may also be ``(name, weight)`` or a mapping ``{"name", "weight", "params"}``
    (as a recipe gives it). A name used twice gets keys ``name_<index>``.
    """
    if isinstance(items, (str, bytes)) or not items:
        raise ConfigError("a weighted sum of objectives needs a list of (name, weight, params) items, "
                          f"got {items!r}")
    parsed = [_unpack(item, index) for index, item in enumerate(items)]
    counts = Counter(name for name, _, _ in parsed)
    terms = []
    for index, (name, weight, params) in enumerate(parsed):
        spec = get_spec(name)
        check_params(spec, params)
        key = name if counts[name] == 1 else f"{name}_{index}"
        terms.append(Term(key=key, weight=weight, spec=spec, params=dict(params)))
    if len({term.spec.paired for term in terms}) > 1:
        kinds = ", ".join(f"{t.spec.name} ({'paired' if t.spec.paired else 'unpaired'})" for t in terms)
        raise ConfigError(f"cannot sum objectives on paired and unpaired rows: {kinds}")
    return ComposedObjective(tuple(terms))


def _unpack(item: Any, index: int) -> tuple[str, float, Mapping[str, Any]]:
    if isinstance(item, Mapping):
        unknown = set(item) - {"name", "weight", "params"}
        if "name" not in item or unknown:
            raise ConfigError(f"objective item {index}: expected keys name, weight, params; got "
                              f"{sorted(item)}")
        name, weight, params = item["name"], item.get("weight", 1.0), item.get("params") or {}
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        name, weight, params = item[0], item[1], (item[2] if len(item) == 3 else None) or {}
    else:
        raise ConfigError(f"objective item {index}: expected (name, weight, params), got {item!r}")
    if not isinstance(name, str):
        raise ConfigError(f"objective item {index}: the name must be a string, got {name!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ConfigError(f"objective item {index} ('{name}'): the weight must be a finite number, "
                          f"got {weight!r}")
    if not isinstance(params, Mapping):
        raise ConfigError(f"objective item {index} ('{name}'): params must be a mapping, got {params!r}")
    return name, float(weight), params


def _term_state(state: nn.Module | None, key: str) -> nn.Module | None:
    if state is None:
        return None
    if not isinstance(state, nn.ModuleDict):
        raise ConfigError(f"a weighted sum of objectives expects its state as the ModuleDict made by "
                          f"its make_state, got {type(state).__name__}")
    return state[key] if key in state else None


def _check_rows(terms: Sequence[Term], outputs: Sequence[ObjectiveOutput]) -> None:
    shapes = {term.key: tuple(out.loss.shape) for term, out in zip(terms, outputs)}
    if len(set(shapes.values())) > 1:
        raise ConfigError(f"the terms of a weighted sum give losses of different shapes {shapes}; "
                          "only objectives with one loss per batch row can be summed")


def _reduction_weight(terms: Sequence[Term], outputs: Sequence[ObjectiveOutput]) -> Tensor | None:
    """The terms' shared row weights; a term without weights counts as weight 1 per row."""
    if all(out.weight is None for out in outputs):
        return None
    weights = [torch.ones_like(out.loss) if out.weight is None else out.weight for out in outputs]
    if any(not torch.equal(w, weights[0]) for w in weights[1:]):
        names = ", ".join(term.key for term in terms)
        raise ConfigError(f"the terms of a weighted sum ({names}) weigh their rows differently in "
                          "the batch mean, so their sum has no single reduction; sum objectives "
                          "that weigh rows alike")
    return weights[0]
