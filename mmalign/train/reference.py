"""Reference strategies: where the reference surrogate of a batch comes from.

* ``copy``: a frozen copy of the policy (of its base, for a LoRA policy);
* ``adapters_off``: a LoRA policy with its adapters disabled: no second model held;
* ``adapter``: a named, frozen adapter of the policy (e.g. its SFT adapter);
* ``precomputed``: one pass before training stores reference surrogates on disk
  (:mod:`mmalign.train.precompute`); later steps and runs only read them;
* ``none``: reference-free objectives.

TR-DPO (Gorbatovski et al. 2024, arXiv:2404.09656) soft updates
``ref <- alpha * policy + (1 - alpha) * ref`` every N steps work with ``copy``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mmalign.errors import ConfigError
from mmalign.surrogate import Batch, Draw, Surrogate
from mmalign.train import adapters


@dataclass
class Reference:
    """``model``: a separate reference module (a copy); ``context(scorer)``: a switch under
    which the policy itself is the reference (adapters off, another adapter); ``store``:
    precomputed surrogates."""

    strategy: str
    model: nn.Module | None = None
    context: Callable | None = None
    store: object | None = None

    def surrogate(self, modality, scorer: nn.Module, batch: Batch, draw: Draw,
                  needs: frozenset[str], like: Surrogate | None = None) -> Surrogate | None:
        """The reference surrogate of ``batch`` under ``draw``; ``scorer`` is the policy's
        :class:`~mmalign.train.scorer.PolicyScorer` (wrapped or not)."""
        if self.strategy == "none":
            return None
        if self.store is not None:
            return self.store.lookup(batch, like=like)
        with torch.no_grad():
            if self.model is not None:
                return modality.surrogate(self.model, batch, draw, needs).detach()
            with self.context(scorer):
                return scorer(batch, draw, needs).detach()


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen copy; taken before LoRA is added, so it is the policy's base."""
    ref = copy.deepcopy(model)
    ref.eval().requires_grad_(False)
    return ref


def make_reference(strategy: str, policy: nn.Module, *, adapter_name: str = "reference",
                   base: nn.Module | None = None) -> Reference:
    if strategy == "none":
        return Reference("none")
    if strategy == "copy":
        return Reference("copy", model=base if base is not None else frozen_copy(policy))
    if strategy == "adapters_off":
        if not adapters.has_adapters(policy):
            raise ConfigError("reference.strategy 'adapters_off' needs a LoRA policy (model.lora)")
        return Reference("adapters_off", context=adapters.disabler(policy))
    if strategy == "adapter":
        return Reference("adapter", context=lambda p: adapters.adapter_active(p, adapter_name))
    raise ConfigError(f"unknown reference strategy '{strategy}'")


@torch.no_grad()
def soft_update(reference: nn.Module, policy: nn.Module, alpha: float) -> None:
    """TR-DPO: ``ref <- alpha * policy + (1 - alpha) * ref`` over matching parameters."""
    pol = dict(policy.named_parameters())
    for name, p in reference.named_parameters():
        if name in pol:
            p.mul_(1 - alpha).add_(pol[name].detach().to(p.dtype), alpha=alpha)
