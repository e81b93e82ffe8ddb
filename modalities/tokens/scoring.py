"""A batch of token sequences as a :class:`~mmalign.surrogate.Surrogate`.

Pairs run in one forward pass: packed (``[prompt | chosen | rejected]`` per row, the prompt
and its condition computed once) or naive (``2B`` rows, chosen first). Single responses
(unpaired rows, extra terms) run naive. The surrogate of a response is its summed token
log-probs, ``log pi(y | x) = sum_u log pi(y_u | x, y_<u)`` (Rafailov et al. 2023, eq. 7),
with the per-token terms, masks and extras (:mod:`.logps`) objectives ask for.

A plugin whose model reads more than tokens (images, audio) passes a :class:`Condition`: the
extra inputs of the model's own forward (naive path), the embedding function that writes
the condition's features into the token embeddings (packed path) and, for a model whose
positions depend on the condition (Qwen2-VL's 3-D RoPE), how to compute them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from mmalign.modalities.tokens.forward import Embed, packed_hidden, sequence_hidden, token_embeddings
from mmalign.modalities.tokens.layouts import Ids, NaiveLayout, naive, pack, packed_positions, sequences
from mmalign.modalities.tokens.logps import TokenScores, token_scores
from mmalign.surrogate import Surrogate

EXTRAS = ("vocab_logps", "hidden")

#: ``positions(model, layout, inputs)``: position ids of a naive layout whose rows read the
#: condition ``inputs`` (row-ordered), or None where the model's default ``0, 1, 2, ...`` hold
Positions = Callable[[nn.Module, NaiveLayout, dict[str, Tensor]], Tensor | None]


def default_positions(model: nn.Module, layout: NaiveLayout, inputs: dict[str, Tensor]) -> None:
    return None


@dataclass
class Condition:
    """What the model reads besides the tokens, row-ordered along dim 0 (any number per row)."""

    inputs: dict[str, Tensor] = field(default_factory=dict)
    embed: Embed = token_embeddings
    positions: Positions = default_positions

    def twice(self) -> dict[str, Tensor]:
        """The inputs of the naive pair rows: every row's condition once for chosen, once for rejected."""
        return {key: torch.cat([value, value]) for key, value in self.inputs.items()}


@dataclass(frozen=True)
class Wants:
    """Which extras the objectives need."""

    vocab: bool = False
    hidden: bool = False

    @classmethod
    def of(cls, needs: frozenset[str]) -> "Wants":
        return cls(vocab="vocab_logps" in needs, hidden="hidden" in needs)


#: the keys of the packed layout and of its condition-given positions in a batch's ``frozen`` memo
PACKED_LAYOUT, PACKED_POSITIONS = "tokens/packed_layout", "tokens/packed_positions"


def score_pairs(model: nn.Module, prompts: Ids, chosen: Ids, rejected: Ids, pad_id: int, *, packed: bool,
                wants: Wants = Wants(), condition: Condition = Condition(),
                memo: dict | None = None) -> tuple[TokenScores, TokenScores]:
    """Token scores of the chosen and of the rejected responses, ``[B, U]`` each.

    ``memo`` (a batch's ``frozen`` dict): the packed layout is kept there, so the reference
    forward of a step reuses the policy's layout, its attention mask and their device copies
    (the layout depends on the token ids alone)."""
    options = {"vocab": wants.vocab, "keep_hidden": wants.hidden}
    if packed:
        layout = memo.get(PACKED_LAYOUT) if memo is not None else None
        if layout is None:
            layout = pack(prompts, chosen, rejected, pad_id)
            if memo is not None:
                memo[PACKED_LAYOUT] = layout
        positions = _packed_positions(model, layout, (prompts, chosen, rejected, pad_id), condition, memo)
        states = packed_hidden(model, layout, condition.embed, positions)
        return (token_scores(model, states, layout.chosen, **options),
                token_scores(model, states, layout.rejected, **options))
    layout = naive(prompts, chosen, rejected, pad_id)
    inputs = condition.twice()
    states = sequence_hidden(model, layout, inputs, condition.positions(model, layout, inputs))
    scores = token_scores(model, states, layout.targets, **options)
    rows = len(prompts)
    return scores.rows(slice(0, rows)), scores.rows(slice(rows, 2 * rows))


def score_responses(model: nn.Module, prompts: Ids, responses: Ids, pad_id: int, *, wants: Wants = Wants(),
                    condition: Condition = Condition()) -> TokenScores:
    """Token scores of one response per prompt, ``[N, U]``."""
    layout = sequences(prompts, responses, pad_id)
    states = sequence_hidden(model, layout, condition.inputs, condition.positions(model, layout, condition.inputs))
    return token_scores(model, states, layout.targets, vocab=wants.vocab, keep_hidden=wants.hidden)


def _packed_positions(model: nn.Module, layout, pairs: tuple, condition: Condition,
                      memo: dict | None) -> Tensor | None:
    """The condition's positions of the packed rows, assembled from those of the naive rows
    (:func:`~mmalign.modalities.tokens.layouts.packed_positions`); kept in ``memo`` (they
    depend on the ids and the condition's shapes, not on weights)."""
    if memo is not None and PACKED_POSITIONS in memo:
        return memo[PACKED_POSITIONS]
    flat = naive(*pairs)
    naive_positions = condition.positions(model, flat, condition.twice())
    positions = None if naive_positions is None else packed_positions(layout, naive_positions)
    if memo is not None:
        memo[PACKED_POSITIONS] = positions
    return positions


def pair_surrogate(chosen: TokenScores, rejected: TokenScores) -> Surrogate:
    """Summed log-probs, per-token terms, masks and the extras of both sides."""
    return Surrogate(chosen=chosen.logps.sum(-1), rejected=rejected.logps.sum(-1),
                     chosen_units=chosen.logps, rejected_units=rejected.logps,
                     chosen_mask=chosen.mask, rejected_mask=rejected.mask,
                     extras={**_extras("chosen", chosen), **_extras("rejected", rejected)})


def unpaired_surrogate(scores: TokenScores, label: Tensor) -> Surrogate:
    """Unpaired rows (KTO): every completion in ``chosen``, with its desirable / undesirable label."""
    return Surrogate(chosen=scores.logps.sum(-1), chosen_units=scores.logps, chosen_mask=scores.mask,
                     label=label, extras=_extras("chosen", scores))


def _extras(side: str, scores: TokenScores) -> dict[str, Tensor]:
    """``vocab_logps_<side>`` / ``hidden_<side>`` when computed."""
    return {f"{name}_{side}": getattr(scores, name) for name in EXTRAS if getattr(scores, name) is not None}



def kl_mismatched(model: nn.Module, prompts: Ids, mismatched: Ids, pad_id: int,
                  condition: Condition = Condition()) -> Tensor:
    """``log pi(y_{i+1} | x_i)`` per row: KTO's estimate of ``KL(pi || ref)`` pairs each prompt
    (with its condition) with another row's completion (Ethayarajh et al. 2024, arXiv:2402.01306).

    Computed without gradient: KTO uses the estimate as its reference point ``z_0`` and does
    not back-propagate through it (TRL neither); a separate pass keeps the main one small.
    """
    with torch.no_grad():
        scores = score_responses(model, prompts, mismatched, pad_id, condition=condition)
    return scores.logps.sum(-1)
