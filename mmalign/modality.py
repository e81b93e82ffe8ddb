"""The contract a modality plugin fulfils. The core talks to plugins only through this.

A plugin is a module or package with a class that satisfies :class:`Modality` (structural
typing: no base class to inherit). It is registered by name, either with
``@mmalign.registry.register_modality("name")`` or through the ``mmalign.modalities`` entry
point of its package. The trainer builds it as ``cls(options)`` where ``options`` is the
recipe's ``modality.options`` mapping.

One training step (DESIGN.md)::

    batch = modality.collate(records)
    draw = modality.draw(batch, keys, model)          # shared by policy and reference
    pol = modality.surrogate(policy, batch, draw, needs)
    ref = modality.surrogate(reference, batch, draw, needs)   # under no_grad
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from mmalign.surrogate import Batch, Draw, Surrogate


@dataclass
class ModelSpec:
    """Where a policy comes from, as the recipe's ``model`` section says.

    ``path``: a local checkpoint folder; ``builder``: a name in ``mmalign.models`` (tiny
    models built from a config, for tests and demos); ``builder_args``: its keyword args.
    """

    path: str | None = None
    builder: str | None = None
    builder_args: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Modality(Protocol):
    #: needs this modality can fill (see mmalign.objectives.spec); refused at config time otherwise
    supported_needs: frozenset[str]
    #: True when ``draw`` runs the model (InPO's inversion): precomputed references are refused
    policy_dependent_draw: bool
    #: module names LoRA adapts by default
    lora_target_modules: Sequence[str]

    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """Load (or build) the trainable model and keep the frozen parts on ``self``."""

    def load_records(self, path: str, schema: str | None) -> list[dict[str, Any]]:
        """Read and validate a local data file; errors name file, row and field."""

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Rows -> one batch. Each record carries a stable ``sample_id``."""

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """Randomness for this batch, from per-row generators seeded by
        ``(seed, sample_id, batch.epoch)``; empty for token models. The row keys live in the
        batch (``sample_id``, ``epoch``). Frozen inputs computed once per batch and shared by
        policy and reference (text embeddings of the drawn captions) may ride along here."""

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """The model's log-likelihood surrogate of the batch."""

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """Write the trained model in its ecosystem's own format; return the paths written."""

    # Optional, called when present:
    #   load_records(path, schema, *, checks) -> records
    #       with mmalign.data.checks.RowChecks: bad rows dropped and counted under
    #       data.on_bad_row: skip, duplicates counted, repairs counted;
    #   check_record(record) -> None
    #       checks that need the loaded tokenizer or processor, run on every row before training;
    #   pair_identical(record) -> bool
    #       content-level "chosen equals rejected" (two image files with the same bytes);
    #   prepare(records, cache_dir) -> records
    #       frozen work done once (VAE latents, text embeddings), so an epoch over cached
    #       records never runs the frozen encoders;
    #   sample(model, prompts, n, seed) -> list
    #       generation for evaluators, sample grids and online data.


def row_generator(seed: int, sample_id: str, epoch: int, salt: str = "") -> torch.Generator:
    """A CPU generator for one row, seeded by ``(seed, sample_id, epoch)``.

    Draws made from it do not depend on batch composition, order, world size, gradient
    accumulation or resume: a row sees the same randomness wherever it lands.
    """
    digest = hashlib.blake2b(f"{seed}|{sample_id}|{epoch}|{salt}".encode(), digest_size=8).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


def check_needs(modality: Any, needs: frozenset[str], modality_name: str) -> None:
    """Fail at config time when the modality cannot fill what the objectives ask for."""
    supported = getattr(modality, "supported_needs", frozenset())
    missing = sorted(
        n for n in needs
        if n not in supported and not n.startswith("fields:")
        and not (n.startswith("terms:") and "terms:*" in supported)
    )
    if missing:
        from mmalign.errors import ConfigError

        raise ConfigError(
            f"modality '{modality_name}' cannot provide {', '.join(missing)} that the objective "
            f"needs; it provides: {', '.join(sorted(supported)) or '(nothing extra)'}. "
            "Choose an objective that needs less, or another modality"
        )
