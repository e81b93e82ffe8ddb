"""A batch of token sequences as a :class:`~mmalign.surrogate.Surrogate`.

Pairs run in one forward pass: packed (``[prompt | chosen | rejected]`` per row, the prompt
and its condition computed once) or naive (``2B`` rows, chosen first). Single responses
(unpaired rows, extra terms) run naive. The surrogate of a response is its summed token
log-probs, ``log pi(y | x) = sum_u log pi(y_u | x, y_<u)`` (Rafailov et al. 2023, eq. 7),
with the per-token terms, masks and extras (:mod:`.logps`) objectives ask for.

A plugin whose model reads more than tokens (images, audio) passes a :class:`Condition`: the
extra inputs of the model's own forward (naive path) and the embedding function that writes
the condition's features into the token embeddings (packed path).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import torch
from torch import Tensor, nn

from mmalign.modalities.tokens.forward import Embed, packed_hidden, sequence_hidden, token_embeddings
from mmalign.modalities.tokens.layouts import Ids, naive, pack, sequences
from mmalign.modalities.tokens.logps import TokenScores, token_scores
from mmalign.surrogate import Surrogate

EXTRAS = ("vocab_logps", "hidden")


@dataclass
class Condition:
    """What the model reads besides the tokens, row-ordered along dim 0 (any number per row)."""

    inputs: dict[str, Tensor] = field(default_factory=dict)
    embed: Embed = token_embeddings

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


#: the key of the packed layout in a batch's ``frozen`` memo
PACKED_LAYOUT = "tokens/packed_layout"


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
        states = packed_hidden(model, layout, condition.embed)
        return (token_scores(model, states, layout.chosen, **options),
                token_scores(model, states, layout.rejected, **options))
    layout = naive(prompts, chosen, rejected, pad_id)
    scores = token_scores(model, sequence_hidden(model, layout, condition.twice()), layout.targets, **options)
    rows = len(prompts)
    return scores.rows(slice(0, rows)), scores.rows(slice(rows, 2 * rows))


def score_responses(model: nn.Module, prompts: Ids, responses: Ids, pad_id: int, *, wants: Wants = Wants(),
                    condition: Condition = Condition()) -> TokenScores:
    """Token scores of one response per prompt, ``[N, U]``."""
    layout = sequences(prompts, responses, pad_id)
    return token_scores(model, sequence_hidden(model, layout, condition.inputs), layout.targets,
                        vocab=wants.vocab, keep_hidden=wants.hidden)


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

