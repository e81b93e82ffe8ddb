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

from dataclasses import dataclass, field
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
    #: what :meth:`ids_on` and :meth:`mask_on` made, by device (and dtype)
    _placed: dict = field(default_factory=dict, repr=False, compare=False)

    def attention_mask(self, dtype: torch.dtype) -> Tensor:
        """The additive ``[B, 1, L, L]`` block mask: 0 where attention is allowed, the dtype's
        minimum elsewhere (a float mask works with both eager and SDPA attention)."""
        allowed = block_mask(self.segments)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)

    # The policy and the reference of a step read one layout (the modality keeps it for the
    # batch): what goes to the device is made once, not once per forward.
    def ids_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(input_ids, position_ids)`` on ``device``."""
        key = ("ids", str(device))
        if key not in self._placed:
            self._placed[key] = (self.input_ids.to(device), self.position_ids.to(device))
        return self._placed[key]

    def mask_on(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """:meth:`attention_mask` in ``dtype`` on ``device``."""
        key = ("mask", str(device), dtype)
        if key not in self._placed:
            self._placed[key] = self.attention_mask(dtype).to(device)
        return self._placed[key]


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
    length = max(len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected))
    units = max(max(map(len, chosen)), max(map(len, rejected)))
    ids, positions, segments = [], [], []
    chosen_t, rejected_t = _TargetRows(units), _TargetRows(units)
    # rows are built as Python lists and become tensors once: a row-by-row tensor fill cost
    # more than the rest of a small model's reference forward
    for p, c, r in zip(prompts, chosen, rejected):
        np_, nc, nr = len(p), len(c), len(r)
        pad = length - np_ - nc - nr
        ids.append([*p, *c, *r] + [pad_id] * pad)
        positions.append([*range(np_ + nc), *range(np_, np_ + nr)] + [0] * pad)
        segments.append([PROMPT] * np_ + [CHOSEN] * nc + [REJECTED] * nr + [PAD] * pad)
        # token u of a response is predicted by the position before it; for u = 0 both
        # responses are predicted by the last prompt token
        chosen_t.add(c, _positions(np_ - 1, np_, units, length))
        rejected_t.add(r, _positions(np_ - 1, np_ + nc, units, length))
    return PackedLayout(_long(ids), _long(positions), _long(segments), chosen_t.tensors(), rejected_t.tensors())


def naive(prompts: Ids, chosen: Ids, rejected: Ids, pad_id: int) -> NaiveLayout:
    """The naive layout of a batch of pairs: each prompt written out twice, once per response."""
    return sequences([*prompts, *prompts], [*chosen, *rejected], pad_id)


def sequences(prompts: Ids, responses: Ids, pad_id: int) -> NaiveLayout:
    """One right-padded sequence ``[prompt | response]`` per row, with a 2-D padding mask."""
    length = max(len(p) + len(r) for p, r in zip(prompts, responses))
    units = max(map(len, responses))
    ids, attention, targets = [], [], _TargetRows(units)
    for p, r in zip(prompts, responses):
        n = len(p) + len(r)
        ids.append([*p, *r] + [pad_id] * (length - n))
        attention.append([1] * n + [0] * (length - n))
        targets.add(r, _positions(len(p) - 1, len(p), units, length))
    return NaiveLayout(_long(ids), _long(attention), targets.tensors())


def _positions(first: int, start: int, units: int, length: int) -> list[int]:
    """Predicting positions of a response whose token 0 sits at ``start`` (predicted from
    ``first``), ``units`` of them: entries past the response run on into the row."""
    return ([first] + [min(start + u, length - 1) - 1 for u in range(1, units)])[:units]


def _long(rows: list[list[int]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.long)


class _TargetRows:
    """:class:`Targets` of ``units`` entries per row, gathered row by row as lists."""

    def __init__(self, units: int):
        self.units = units
        self.positions: list[list[int]] = []
        self.targets: list[list[int]] = []
        self.mask: list[list[bool]] = []

    def add(self, tokens: Sequence[int], positions: list[int]) -> None:
        rest = self.units - len(tokens)
        self.positions.append(positions)
        self.targets.append([*tokens] + [0] * rest)
        self.mask.append([True] * len(tokens) + [False] * rest)

    def tensors(self) -> Targets:
        return Targets(_long(self.positions), _long(self.targets), torch.tensor(self.mask, dtype=torch.bool))


def packed_positions(layout: PackedLayout, naive_positions: Tensor) -> Tensor:
    """Position ids of the packed rows taken from the naive rows' own, ``[..., B, L]``.

    ``naive_positions`` ``[..., 2B, L']`` are the positions the model gives the naive layout
    of the same pairs (rows ``b`` = prompt + chosen, ``B + b`` = prompt + rejected): the
    prompt and chosen tokens of packed row ``b`` take row ``b``'s, its rejected tokens those of
    row ``B + b`` after the prompt. A model with positions beyond ``0, 1, 2, ...`` (the 3-D
    multimodal RoPE of Qwen2-VL, where a clip's temporal positions jump ahead) then sees in
    the packed row exactly the positions of its two sequences."""
    rows = layout.input_ids.shape[0]
    out = naive_positions.new_zeros((*naive_positions.shape[:-2], rows, layout.input_ids.shape[1]))
    counts = torch.stack([(layout.segments == s).sum(-1) for s in (PROMPT, CHOSEN, REJECTED)], -1).tolist()
    for b, (n_prompt, n_chosen, n_rejected) in enumerate(counts):
        head = n_prompt + n_chosen
        out[..., b, :head] = naive_positions[..., b, :head]
        out[..., b, head:head + n_rejected] = naive_positions[..., rows + b, n_prompt:n_prompt + n_rejected]
    return out
