"""The surrogate of a vision-language batch: summed response-token log-probs, per-token terms
and masks, and what token-level objectives ask for.

``log p(y | x, images) = sum_u log softmax(lm_head(h_{u-1}))[y_u]`` over the response tokens
(:mod:`mmalign.modalities.tokens`: EOS scored, BOS never), computed once per pair by the
packed layout or, for comparison, by the naive one; the images enter through a
:class:`~mmalign.modalities.tokens.scoring.Condition`. Extras, when asked:
``vocab_logps_{chosen,rejected}`` ``[B, U, V]`` (TDPO), ``hidden_{chosen,rejected}``
``[B, U, H]``, and the terms ``chosen|condition=corrupted`` (mDPO, Wang et al. 2024,
arXiv:2406.11839: the chosen answer under a corrupted image) and
``chosen|condition=retrieved`` (Re-Align, Xing et al. 2025, arXiv:2502.13146).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from mmalign.modalities.tokens.scoring import (Condition, Wants, kl_mismatched, pair_surrogate, score_pairs,
                                               score_responses, unpaired_surrogate)
from mmalign.modalities.vision_language.vision import SHAPE_INPUTS, Features, embed_features, media_embed, rope_positions
from mmalign.objectives.conditional import CORRUPTED, RETRIEVED
from mmalign.surrogate import Batch, Surrogate

#: needs only unpaired rows (KTO) can fill
UNPAIRED_NEEDS = frozenset({"label", "terms:kl_mismatched"})
SUPPORTED_NEEDS = frozenset({"token_logps", "vocab_logps", "hidden", f"terms:{CORRUPTED}", f"terms:{RETRIEVED}"}
                            | UNPAIRED_NEEDS)
TERMS = (CORRUPTED, RETRIEVED)

#: (batch, which term) -> media inputs with each row's image or clip swapped for another
SwapImages = Callable[[Batch, str], dict[str, Tensor]]


def score(model: nn.Module, batch: Batch, needs: frozenset[str], *, packed: bool, condition: Condition,
          swap_images: SwapImages) -> Surrogate:
    """The :class:`Surrogate` of ``model`` on ``batch`` whose images are ``condition`` (see the
    module docstring)."""
    inputs = batch.inputs
    chosen, rejected = score_pairs(model, inputs["prompt_ids"], inputs["chosen_ids"], inputs["rejected_ids"],
                                   inputs["pad_id"], packed=packed, wants=Wants.of(needs), condition=condition,
                                   memo=batch.frozen)
    out = pair_surrogate(chosen, rejected)
    for term in TERMS:
        if f"terms:{term}" in needs:
            out.terms[term] = chosen_logp_with(model, inputs, swap_images(batch, term))
    return out


def score_unpaired(model: nn.Module, batch: Batch, needs: frozenset[str], condition: Condition) -> Surrogate:
    """Unpaired rows (KTO): each completion's summed log-probs with its label, and, when asked,
    the mismatched completions' (``terms:kl_mismatched``); naive layout, one row per completion."""
    inputs = batch.inputs
    scores = score_responses(model, inputs["prompt_ids"], inputs["completion_ids"], inputs["pad_id"],
                             wants=Wants.of(needs), condition=condition)
    out = unpaired_surrogate(scores, inputs["label"])
    if "terms:kl_mismatched" in needs:
        out.terms["kl_mismatched"] = kl_mismatched(model, inputs["prompt_ids"], inputs["mismatched_ids"],
                                                   inputs["pad_id"], condition)
    return out


def pixel_condition(media: dict[str, Tensor] | Tensor | None, memo: dict | None = None) -> Condition:
    """The images and clips of a batch (the processor's inputs, every row's in row order; or
    LLaVA's pixel values alone) as the model reads them on either path; ``memo`` (the batch's
    ``frozen`` dict) lets a frozen vision side run once per batch
    (:func:`~mmalign.modalities.vision_language.vision.embed`)."""
    if isinstance(media, Tensor):
        media = {"pixel_values": media}
    return Condition(inputs=dict(media or {}), embed=media_embed(media, memo), positions=rope_positions)


def feature_condition(features: Features, shapes: dict[str, Tensor] | None = None) -> Condition:
    """Media whose projected features were cached (:mod:`.feature_cache`), with the grids the
    positions are made from: packed path only."""
    shapes = {k: v for k, v in (shapes or {}).items() if k in SHAPE_INPUTS}
    return Condition(inputs=shapes, embed=lambda model, input_ids: embed_features(model, input_ids, features),
                     positions=rope_positions)


def chosen_logp_with(model: nn.Module, inputs: dict, media: dict[str, Tensor]) -> Tensor:
    """``log p(chosen | prompt, other image or clip)`` ``[B]``: the prompt's media tokens are
    the same (the swapped medium is brought to the original's size), only the pixels change."""
    scores = score_responses(model, inputs["prompt_ids"], inputs["chosen_ids"], inputs["pad_id"],
                             condition=pixel_condition(media))
    return scores.logps.sum(-1)
