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

from mmalign.modalities.tokens.scoring import Condition, Wants, pair_surrogate, score_pairs, score_responses
from mmalign.modalities.vision_language.vision import embed_features, image_embed
from mmalign.objectives.conditional import CORRUPTED, RETRIEVED
from mmalign.surrogate import Batch, Surrogate

SUPPORTED_NEEDS = frozenset({"token_logps", "vocab_logps", "hidden", f"terms:{CORRUPTED}", f"terms:{RETRIEVED}"})
TERMS = (CORRUPTED, RETRIEVED)

#: (batch, which term) -> pixel values of the swapped images, one image per row
SwapImages = Callable[[Batch, str], Tensor]


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


def pixel_condition(pixel_values: Tensor | None, memo: dict | None = None) -> Condition:
    """The images of a batch (every row's, in row order) as the model reads them on either path;
    ``memo`` (the batch's ``frozen`` dict) lets a frozen vision side run once per batch
    (:func:`~mmalign.modalities.vision_language.vision.embed`)."""
    return Condition(inputs={} if pixel_values is None else {"pixel_values": pixel_values},
                     embed=image_embed(pixel_values, memo))


def feature_condition(features: Tensor) -> Condition:
    """Images whose projected features were cached (:mod:`.feature_cache`): packed path only."""
    return Condition(embed=lambda model, input_ids: embed_features(model, input_ids, features))


def chosen_logp_with(model: nn.Module, inputs: dict, pixel_values: Tensor) -> Tensor:
    """``log p(chosen | prompt, other image)`` ``[B]``: the prompt's image tokens are the
    same (a fixed-resolution image always gives the same number), only the pixels change."""
    scores = score_responses(model, inputs["prompt_ids"], inputs["chosen_ids"], inputs["pad_id"],
                             condition=pixel_condition(pixel_values))
    return scores.logps.sum(-1)
