"""Token layouts for scoring responses: naive (one row per ``[prompt | response]``) and packed
(one row per pair, ``[prompt | chosen | rejected]``, the prompt once).

Naive: ``N`` right-padded sequences with an ordinary 2-D padding mask; for a batch of pairs,
rows ``0..B-1`` hold ``prompt + chosen`` and rows ``B..2B-1`` ``prompt + rejected``, as a DPO
trainer that concatenates chosen and rejected does (Rafailov et al. 2023).

Packed: each row is one sequence ``[prompt | chosen | rejected]`` under a 4-D block attention
mask. Prompt tokens attend causally to the prompt; a chosen token to the prompt and earlier
chosen tokens; a rejected token to the prompt and earlier rejected tokens, never to chosen.
Position ids restart after the prompt, so rejected positions continue from the prompt end as
chosen ones do. Every token therefore sees exactly the context it has in its own sequence
``[prompt | response]``, and the prompt (with its image tokens) is computed once per pair.

Both layouts say, for every response token ``u``, which position's output predicts it
(``positions``), what the token is (``targets``) and whether it exists (``mask``); all are
``[rows, U]`` with ``U`` the longest response of the batch. Entries past a response are
masked; their positions continue into the row (clamped to it), so every index is valid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, -1

Ids = Sequence[Sequence[int]]


@dataclass
class Targets:
    """Where each response token is predicted from, which token it is, and whether it exists."""

    positions: Tensor  # [N, U] long: index into the sequence dimension of the model output
    targets: Tensor    # [N, U] long
    mask: Tensor       # [N, U] bool


@dataclass
class PackedLayout:
    input_ids: Tensor       # [B, L]
    position_ids: Tensor    # [B, L]
    segments: Tensor        # [B, L] PROMPT / CHOSEN / REJECTED / PAD
    chosen: Targets
    rejected: Targets

    def attention_mask(self, dtype: torch.dtype) -> Tensor:
        """The additive ``[B, 1, L, L]`` block mask: 0 where attention is allowed, the dtype's
        minimum elsewhere (a float mask works with both eager and SDPA attention)."""
        allowed = block_mask(self.segments)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


@dataclass
class NaiveLayout:
    """One sequence per (prompt, response)."""

    input_ids: Tensor       # [N, L]
    attention_mask: Tensor  # [N, L] long, 1 for real tokens
    targets: Targets        # [N, U]


def block_mask(segments: Tensor) -> Tensor:
    """``[B, L, L]`` bool: query ``i`` may attend key ``j``.

    ``j <= i`` and both real, and ``j`` is in the prompt or in ``i``'s own block. A padding
    query attends to itself only, so its softmax stays finite.
    """
    length = segments.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments.unsqueeze(-1), segments.unsqueeze(-2)
    same_block = (key == PROMPT) | (key == query)
    real = (query != PAD) & (key != PAD)
    diagonal = torch.eye(length, dtype=torch.bool, device=segments.device)
    return (causal & same_block & real) | (diagonal & (query == PAD))


def pack(prompts: Ids, chosen: Ids, rejected: Ids, pad_id: int) -> PackedLayout:
    """The packed layout of a batch of pairs (see the module docstring)."""
    rows = len(prompts)
    length = max(len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected))
    units = max(max(map(len, chosen)), max(map(len, rejected)))
    input_ids = torch.full((rows, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((rows, length), dtype=torch.long)
    segments = torch.full((rows, length), PAD, dtype=torch.long)
    chosen_t, rejected_t = _empty_targets(rows, units), _empty_targets(rows, units)
    for b, (p, c, r) in enumerate(zip(prompts, chosen, rejected)):
        np_, nc, nr = len(p), len(c), len(r)
        input_ids[b, : np_ + nc + nr] = torch.tensor([*p, *c, *r])
        position_ids[b, : np_ + nc] = torch.arange(np_ + nc)
        position_ids[b, np_ + nc: np_ + nc + nr] = torch.arange(np_, np_ + nr)
        segments[b, :np_], segments[b, np_: np_ + nc], segments[b, np_ + nc: np_ + nc + nr] = PROMPT, CHOSEN, REJECTED
        # token u of a response is predicted by the position before it; for u = 0 both
        # responses are predicted by the last prompt token
        _fill(chosen_t, b, c, _positions(np_ - 1, np_, units, length))
        _fill(rejected_t, b, r, _positions(np_ - 1, np_ + nc, units, length))
    return PackedLayout(input_ids, position_ids, segments, chosen_t, rejected_t)


def naive(prompts: Ids, chosen: Ids, rejected: Ids, pad_id: int) -> NaiveLayout:
    """The naive layout of a batch of pairs: each prompt written out twice, once per response."""
    return sequences([*prompts, *prompts], [*chosen, *rejected], pad_id)


def sequences(prompts: Ids, responses: Ids, pad_id: int) -> NaiveLayout:
    """One right-padded sequence ``[prompt | response]`` per row, with a 2-D padding mask."""
    length = max(len(p) + len(r) for p, r in zip(prompts, responses))
    units = max(map(len, responses))
    input_ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), length), dtype=torch.long)
    targets = _empty_targets(len(prompts), units)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[b, : len(p) + len(r)] = torch.tensor([*p, *r])
        attention[b, : len(p) + len(r)] = 1
        _fill(targets, b, r, _positions(len(p) - 1, len(p), units, length))
    return NaiveLayout(input_ids, attention, targets)


def _positions(first: int, start: int, units: int, length: int) -> Tensor:
    """Predicting positions of a response whose token 0 sits at ``start`` (predicted from
    ``first``), ``units`` of them: entries past the response run on into the row."""
    positions = (start + torch.arange(units)).clamp(max=length - 1) - 1
    positions[0] = first
    return positions


def _empty_targets(rows: int, units: int) -> Targets:
    return Targets(torch.zeros((rows, units), dtype=torch.long), torch.zeros((rows, units), dtype=torch.long),
                   torch.zeros((rows, units), dtype=torch.bool))


def _fill(t: Targets, row: int, tokens: Sequence[int], positions: Tensor) -> None:
    n = len(tokens)
    t.positions[row] = positions
    t.targets[row, :n] = torch.tensor(list(tokens), dtype=torch.long)
    t.mask[row, :n] = True
