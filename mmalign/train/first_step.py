"""Checks of a plugin's first step: mistakes of a new plugin named before they cost a run.

* every record has its own ``sample_id`` (draws, caches and precomputed references are keyed
  by it);
* the policy's surrogate carries a gradient (a ``.detach()``, a ``torch.no_grad()`` or a
  frozen model inside ``surrogate`` would train nothing);
* at step 0, with a reference that starts as the policy (``copy``, ``adapters_off``,
  ``precomputed``), the two surrogates are equal: a difference means dropout is on in the
  policy (``model.disable_dropout: false``), or the surrogate is not deterministic for a
  given draw. A named-adapter reference differs by design and is not compared.

A non-finite loss is the guard's business (:mod:`mmalign.train.guard`), not this module's.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from mmalign.errors import ConfigError
from mmalign.surrogate import Surrogate

#: reference strategies whose surrogate equals the policy's before the first update
STARTS_EQUAL = ("copy", "adapters_off", "precomputed")


def check_records(records: Sequence[dict[str, Any]], plugin: str, source: str) -> None:
    """Each record of ``source`` has a ``sample_id`` of its own."""
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        sid = record.get("sample_id")
        if sid is None or sid == "":
            raise ConfigError(f"modality '{plugin}': record {index} of {source} has no sample_id; "
                              "load_records must give every record a stable, distinct sample_id "
                              "(for example '<file name>:<row>')")
        if sid in seen:
            raise ConfigError(f"modality '{plugin}': records {seen[sid]} and {index} of {source} share "
                              f"sample_id '{sid}'; draws, caches and precomputed references are keyed by it, "
                              "so each record needs its own")
        seen[sid] = index


def check_gradient(policy: Surrogate, plugin: str) -> None:
    if not policy.chosen.requires_grad:
        raise ConfigError(f"modality '{plugin}': the policy's surrogate carries no gradient, so training "
                          "would change nothing; surrogate() must not detach its output, run under "
                          "torch.no_grad(), or score through a frozen copy of the model")


def check_start_equal(policy: Surrogate, reference: Surrogate | None, plugin: str, strategy: str,
                      tolerance: float = 1e-3) -> None:
    """Policy and reference agree at step 0 (to ``tolerance``, relative and absolute)."""
    if reference is None or strategy not in STARTS_EQUAL:
        return
    for side in ("chosen", "rejected"):
        mine, theirs = getattr(policy, side), getattr(reference, side)
        if mine is None or theirs is None:
            continue
        mine, theirs = mine.detach().float(), theirs.detach().float().to(mine.device)
        gap = (mine - theirs).abs().max().item()
        if not torch.allclose(mine, theirs, rtol=tolerance, atol=tolerance):
            raise ConfigError(
                f"modality '{plugin}': at step 0 the policy's {side} surrogate differs from the "
                f"reference's (reference.strategy {strategy}; largest gap {gap:.3g}) although both are "
                "the same model. Dropout left on in the policy (keep model.disable_dropout: true) or a "
                "surrogate that is not deterministic for a given draw does this. Set "
                "train.first_step_checks: false only if the difference is meant")


def disable_dropout(model: nn.Module) -> int:
    """Set every dropout probability to 0 (TRL's ``disable_dropout``); returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
            count += 1
    return count
