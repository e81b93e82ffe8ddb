"""VideoDPO's per-pair weighting, as a per-row weight of the core.

VideoDPO (Liu et al. 2024, "VideoDPO: Omni-Preference Alignment for Video Diffusion
Generation", arXiv:2412.14167) scores every generated clip with its OmniScore, pairs clips of
one prompt by it, and re-weights each pair's DPO term by a power of the pair's score, with
a tuning exponent ``alpha`` (the paper's ablation over ``alpha``). The weighted loss of a batch
of ``B`` pairs is

    ``L = -1/B sum_i w_i log sigmoid(-beta/2 [(m_w - m_w_ref) - (m_l - m_l_ref)]_i)``,
    ``w_i = (c / p_i) ** alpha``,

with ``p_i`` the pair's score. This is the form of the authors' released code
(``data/video_data.py``: ``dupfactor = (0.72 / prob_score) ** dupbeta``, so ``c = 0.72``;
the pair's ``score`` written by ``OmniScore/pair_prob.py`` is the product of its two clips'
scores), which multiplies each pair's ``-log sigmoid`` by the factor before the batch mean
(``lvdm/models/ddpm3d.py``, ``dpo_loss``); their bundled config leaves it off (``dupbeta: 0``).

Here the weight is the core's per-row weight (``mmalign.train.weights``): with
``model.options.videodpo_alpha`` set, the loader writes ``w_i`` into the row's ``score`` field,
``data.weight_field: score`` makes it the row's weight and ``data.weight_reduction:
sum_over_batch`` reproduces their ``mean(w * loss)``; nothing in the objective changes.

One difference remains, and it is deliberate: the squared errors ``m``. Their ``dpo_loss``
averages ``(pred - target)^2`` over dims ``[1, 2, 3]`` of a 5-D ``[2B, C, T, H, W]`` tensor,
so each "per-sample" error is a vector over the last (width) axis, the loss a mean of ``B x W``
per-column terms and their logged implicit accuracy can exceed 1. Here ``m`` is the mean over
**all** non-batch dims (:func:`mmalign.modalities.denoising.surrogate.per_sample`), one number
per clip, as in Diffusion-DPO (Wallace et al. 2023, arXiv:2311.12908); ``-log sigmoid`` of the
mean is not the mean of the per-column ``-log sigmoid``, so a ``beta`` tuned on their code
does not carry over exactly.
"""
from __future__ import annotations

import math

#: VideoDPO's constant ``c`` (``data/video_data.py``)
VIDEODPO_SCALE = 0.72


def videodpo_weight(score: float, alpha: float, scale: float = VIDEODPO_SCALE) -> float:
    """``(scale / score) ** alpha``: VideoDPO's weight of a pair whose score is ``score > 0``."""
    if not (math.isfinite(score) and score > 0):
        raise ValueError(f"a VideoDPO pair weight needs a positive score, got {score!r}")
    return (scale / score) ** alpha
