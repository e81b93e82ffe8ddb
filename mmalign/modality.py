"""The contract a modality plugin fulfils. The core talks to plugins only through this.

A plugin is a module or package with a class that satisfies :class:`Modality` (structural
typing: no base class to inherit). It is registered by name, either with
``@mmalign.registry.register_modality("name")`` or through the ``mmalign.modalities`` entry
point of its package. The trainer builds it as ``cls(**options)`` where ``options`` is the
recipe's ``model.options`` mapping (validated first by the plugin's pydantic ``Options`` when
it has one).

One training step (DESIGN.md)::

    batch = modality.collate(records)
    draw = modality.draw(batch, seed, model)          # randomness shared by policy and reference
    pol = modality.surrogate(policy, batch, draw, needs)
    ref = modality.surrogate(reference, batch, draw, needs)   # under no_grad; reuses batch.frozen
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
    models built from a config, for tests and demos); ``builder_args``: its keyword args;
    ``dtype``: the weights' ``torch.dtype``.
    """

    path: str | None = None
    builder: str | None = None
    builder_args: dict[str, Any] = field(default_factory=dict)
    dtype: torch.dtype = torch.float32  # parsed once, from the recipe's model.dtype
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Modality(Protocol):
    """What the trainer calls. Optional hooks are listed after the required ones."""

    #: needs this modality can fill (see mmalign.objectives.spec); the core refuses others at
    #: config time (:func:`check_needs`)
    supported_needs: frozenset[str]
    #: True when ``draw`` runs the model (InPO's inversion): precomputed references are refused
    policy_dependent_draw: bool
    #: module names (or one regular expression) LoRA adapts by default
    lora_target_modules: Sequence[str] | str

    def load_policy(self, spec: ModelSpec) -> nn.Module:
        """Load (or build) the trainable model and keep the frozen parts on ``self``."""

    def load_records(self, path: str, schema: str | None) -> list[dict[str, Any]]:
        """Read and validate a local data file; errors name file, row and field. Records are
        dicts with a stable ``sample_id`` and a ``fields`` dict of extra numeric columns."""

    def collate(self, records: Sequence[dict[str, Any]]) -> Batch:
        """Rows -> one batch. Each record carries a stable ``sample_id``."""

    def draw(self, batch: Batch, seed: int, model: nn.Module | None) -> Draw:
        """The randomness of this batch and nothing else, from per-row generators seeded by
        ``(seed, sample_id, batch.epoch)`` (:func:`row_generator`); empty for token models.
        What frozen encoders compute for the batch goes to ``batch.frozen``, not here."""

    def surrogate(self, model: nn.Module, batch: Batch, draw: Draw, needs: frozenset[str]) -> Surrogate:
        """The model's log-likelihood surrogate of the batch, with what ``needs`` asks for."""

    def export(self, model: nn.Module, out_dir: str, card: str) -> list[str]:
        """Write the trained model in its ecosystem's own format; return the paths written."""

    # Optional, called when present:
    #   Options: a pydantic model of model.options, validated by the core before cls(**options);
    #   draws_per_epoch(needs) -> bool
    #       whether draw() gives other values in another epoch for these needs; absent means
    #       True. A precomputed reference stores one epoch when it is False;
    #   load_records(path, schema, *, checks) -> records
    #       with mmalign.data.checks.RowChecks: bad rows dropped and counted under
    #       data.on_bad_row: skip, duplicates counted, repairs counted;
    #   check_record(record) -> None
    #       checks that need the loaded tokenizer or processor, run on every row before training;
    #   pair_identical(record) -> bool
    #       content-level "chosen equals rejected" (two image files with the same bytes);
    #   prepare(records, cache_dir) -> records
    #       frozen work done once (VAE latents, text embeddings, vision features), so an epoch
    #       over cached records never runs the frozen encoders;
    #   sample(model, prompts, n, seeds, init=None, strength=None) -> list[list]
    #       n samples per prompt, prompt i's from seeds[i] alone (normalize_seeds); init and
    #       strength: partial denoising from a given sample (diffusion) -- for evaluators,
    #       sample grids and online data;
    #   write_samples(model, prompts, seed, out_path) -> str: a sample grid (PNG, WAV, MP4);
    #   load_export(out_dir, spec) -> nn.Module
    #       what export() wrote, loaded on the base model of spec, when load_policy(path=out_dir)
    #       cannot read it alone (a UNet-only export needs the base's VAE and text encoders);
    #   example(folder) -> {"spec", "data", "options", "schema"}
    #       a tiny model and a few rows written to folder: mmalign check-plugin NAME.


def normalize_seeds(seeds: int | Sequence[int], count: int) -> list[int]:
    """One seed per prompt: a sequence is checked for length, an int ``s`` means ``s, s+1, ...``."""
    if isinstance(seeds, int):
        return [seeds + i for i in range(count)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != count:
        from mmalign.errors import ConfigError

        raise ConfigError(f"sample: got {len(seeds)} seeds for {count} prompts; give one seed per prompt")
    return seeds


def row_generator(seed: int, sample_id: str, epoch: int, salt: str = "") -> torch.Generator:
    """A CPU generator for one row, seeded by ``(seed, sample_id, epoch)``.

    Draws made from it do not depend on batch composition, order, world size, gradient
    accumulation or resume: a row sees the same randomness wherever it lands.
    """
    digest = hashlib.blake2b(f"{seed}|{sample_id}|{epoch}|{salt}".encode(), digest_size=8).digest()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen


def draws_per_epoch(modality: Any, needs: frozenset[str]) -> bool:
    """Whether ``modality.draw`` changes between epochs for ``needs`` (True when undeclared)."""
    declared = getattr(modality, "draws_per_epoch", None)
    return True if declared is None else bool(declared(frozenset(needs)))


def check_needs(modality: Any, needs: frozenset[str], modality_name: str) -> None:
    """Fail at config time when the modality cannot fill what the objectives ask for.

    The one rule: a need is filled when the modality lists it in ``supported_needs``; a
    ``fields:<name>`` need always passes here (the data carries it, and a batch without it
    fails with the field named); ``terms:*`` in ``supported_needs`` accepts every term."""
    supported = frozenset(getattr(modality, "supported_needs", frozenset()))
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


#: the members every plugin has: attributes, and methods with the arguments the core passes
REQUIRED_ATTRIBUTES = ("supported_needs", "policy_dependent_draw", "lora_target_modules")
REQUIRED_METHODS = {
    "load_policy": ("spec",),
    "load_records": ("path", "schema"),
    "collate": ("records",),
    "draw": ("batch", "seed", "model"),
    "surrogate": ("model", "batch", "draw", "needs"),
    "export": ("model", "out_dir", "card"),
}
#: optional hooks, checked for their arguments when present
OPTIONAL_METHODS = {
    "draws_per_epoch": ("needs",),
    "check_record": ("record",),
    "pair_identical": ("record",),
    "prepare": ("records", "cache_dir"),
    "sample": ("model", "prompts", "n", "seeds"),
    "write_samples": ("model", "prompts", "seed", "out_path"),
    "load_export": ("out_dir", "spec"),
    "example": ("folder",),
}


def protocol_faults(modality: Any) -> list[str]:
    """What ``modality`` (an instance) lacks or has misshapen, one line each; empty when it
    satisfies :class:`Modality`."""
    import inspect

    faults = [f"no attribute '{name}'" for name in REQUIRED_ATTRIBUTES if not hasattr(modality, name)]
    for methods, required in ((REQUIRED_METHODS, True), (OPTIONAL_METHODS, False)):
        for name, args in methods.items():
            member = getattr(modality, name, None)
            if member is None:
                if required:
                    faults.append(f"no method '{name}({', '.join(args)})'")
                continue
            if not callable(member):
                faults.append(f"'{name}' is not a method")
                continue
            try:
                inspect.signature(member).bind(*args)
            except TypeError as exc:
                faults.append(f"'{name}' cannot be called as {name}({', '.join(args)}): {exc}")
            except ValueError:  # a builtin without a signature: nothing to check
                pass
    if hasattr(modality, "supported_needs") and not isinstance(modality.supported_needs, (set, frozenset)):
        faults.append("'supported_needs' is not a set of need names")
    return faults


def check_protocol(modality: Any, name: str) -> None:
    """Refuse a plugin that lacks a member of the contract, before any model loads."""
    faults = protocol_faults(modality)
    if faults:
        from mmalign.errors import ConfigError

        origin = type(modality).__module__ + "." + type(modality).__qualname__
        raise ConfigError(f"modality '{name}' ({origin}) does not satisfy the plugin contract "
                          "(mmalign.modality.Modality):\n  - " + "\n  - ".join(faults)
                          + "\nSee docs/adding_a_modality.md")
