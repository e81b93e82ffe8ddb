"""The data that crosses the line between a modality plugin and the objective core.

A modality turns a batch of preference rows into a :class:`Surrogate` of the model's
log-likelihood; an objective turns a policy and a reference surrogate into an
:class:`ObjectiveOutput`. Neither side knows anything else about the other.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor


@dataclass
class Surrogate:
    """Log-likelihoods (or their surrogates) of a batch, as one model sees it.

    ``chosen`` / ``rejected`` are ``[B]``. For token models they are summed response-token
    log-probs; for diffusion models ``-0.5 * mean((prediction - target)**2)`` per sample.
    ``*_units`` are ``[B, U]`` per-unit terms (tokens, timesteps, segments) whose masked sum is
    ``chosen`` / ``rejected``. Unpaired rows (KTO) put every completion in ``chosen``, leave
    ``rejected`` as None and give ``label`` (1 desirable, 0 undesirable).

    A unit is whatever the modality sums over: a response token (text, vision- and
    audio-language models), a frame or latent frame (video diffusion), a segment of frames
    (DenseDPO), or one time step of K audio codebooks (its K codebook log-probs summed into
    one unit, so U counts time steps, not tokens). Objectives never need to know which.
    """

    chosen: Tensor
    rejected: Tensor | None = None
    chosen_units: Tensor | None = None
    rejected_units: Tensor | None = None
    chosen_mask: Tensor | None = None
    rejected_mask: Tensor | None = None
    label: Tensor | None = None
    terms: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return self.rejected is not None

    def detach(self) -> "Surrogate":
        return self.map(lambda t: t.detach())

    def to(self, device: torch.device | str) -> "Surrogate":
        return self.map(lambda t: t.to(device))

    def map(self, fn) -> "Surrogate":
        """Apply ``fn`` to every tensor, keeping the structure."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                out[f.name] = fn(value)
            elif isinstance(value, dict):
                out[f.name] = {k: fn(v) for k, v in value.items()}
            else:
                out[f.name] = value
        return replace(self, **out)


@dataclass
class ObjectiveOutput:
    """What an objective returns. ``loss`` is per row; the trainer reduces it.

    With ``weight`` given, the batch loss is ``sum(loss * weight) / sum(weight)`` (summed over
    processes before dividing); otherwise the mean of ``loss``.
    """

    loss: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor | None = None
    weight: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Draw:
    """Randomness of one step, shared by policy and reference, chosen and rejected, and
    nothing else.

    Diffusion modalities hold timesteps, noise, the latent sample, caption dropout and
    crop / flip here; token models leave it empty (or hold mDPO's corruption seed). Each row's
    values come from its own generator seeded by ``(seed, sample_id, epoch)`` so they survive
    shuffling, world size, gradient accumulation and resume. What frozen encoders compute from
    the batch and the draw belongs in :attr:`Batch.frozen`.
    """

    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


@dataclass
class Batch:
    """A collated batch of rows.

    ``inputs`` is the modality's own (tensors and whatever its surrogate reads);
    ``sample_id`` are stable row keys (strings) used to seed draws and key caches;
    ``fields`` are per-row data an objective may ask for by ``fields:<name>``
    (margin rewards, sentence masks, labels of unpaired rows);
    ``weight`` is the per-row weight ``[B]`` the trainer set from ``data.weight_field``
    (None: every row counts once);
    ``frozen`` holds what frozen encoders computed for this batch and its draw (text
    embeddings of the drawn captions, ...): the modality fills it on its first surrogate call
    and reuses it on the next (policy, then reference), so frozen work runs once per step.
    """

    inputs: dict[str, Any]
    sample_id: list[str]
    fields: dict[str, Tensor] = field(default_factory=dict)
    epoch: int = 0
    weight: Tensor | None = None
    frozen: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_id)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            inputs=_move(self.inputs, device),
            sample_id=list(self.sample_id),
            fields=_move(self.fields, device),
            epoch=self.epoch,
            weight=None if self.weight is None else self.weight.to(device),
            frozen=_move(self.frozen, device),
        )


def _move(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, device) for v in value)
    return value
