"""The per-sample Diffusion-DPO surrogate, the layout of pairs, and KTO's mismatched term.

Wallace et al. 2023, Diffusion Model Alignment Using Direct Preference Optimization
(arXiv:2311.12908), eq. 14: the loss is
``-log sigmoid(-beta T w(t) [(||e_w - e_theta(x_t^w)||^2 - ||e_w - e_ref(x_t^w)||^2)
- (||e_l - e_theta(x_t^l)||^2 - ||e_l - e_ref(x_t^l)||^2)])``. With the surrogate
``s = -0.5 * mean((prediction - target)^2)`` per sample, the core's DPO loss
``-log sigmoid(beta [(s_w - s_w_ref) - (s_l - s_l_ref)])`` is exactly the reference
implementation's ``-log sigmoid(-0.5 beta (model_diff - ref_diff))`` with per-sample mean
squared errors, so ``beta`` keeps its meaning (5000 for SD 1.5 and SDXL).
"""
from __future__ import annotations

import torch
from torch import Tensor

from mmalign.surrogate import Surrogate

#: the Surrogate.terms key of KTO's mismatched-condition term (need ``terms:kl_mismatched``)
KL_MISMATCHED = "kl_mismatched"


def per_sample(prediction: Tensor, target: Tensor) -> Tensor:
    """``s = -0.5 * mean((prediction - target)^2)`` ``[N]``: the mean runs over every non-batch
    dim (``[C, H, W]`` of an image latent, ``[C, F, H, W]`` of a video latent), the reduction
    of Wallace et al. 2023's reference implementation; computed in float32 (float64 inputs
    stay float64, for golden-value tests)."""
    dtype = torch.promote_types(torch.promote_types(prediction.dtype, target.dtype), torch.float32)
    err = (prediction.to(dtype) - target.to(dtype)).pow(2)
    return -0.5 * err.mean(dim=tuple(range(1, err.ndim)))


def side_major(x: Tensor) -> Tensor:
    """``[B, S, ...] -> [S * B, ...]``: all winners, then all losers (the paper's concat)."""
    return x.transpose(0, 1).flatten(0, 1)


def mismatched(condition: Tensor | None) -> Tensor | None:
    """Each row's condition replaced by the previous row's (row 0 gets the last one's).

    KTO (Ethayarajh et al. 2024, arXiv:2402.01306) estimates its reference point
    ``z_0 = KL(pi || pi_ref)`` from mismatched pairs (x_i, c_{i-1}) of the batch; Diffusion-KTO
    (Li et al. 2024, arXiv:2404.04465) does so with the diffusion surrogate. With a batch of
    one the "mismatched" condition is the row's own.
    """
    return None if condition is None else condition.roll(1, 0)


def assemble(values: Tensor, rows: int, sides: int, has_mismatched: bool = False) -> Surrogate:
    """The :class:`Surrogate` of per-sample values laid out side-major (``[S * B]`` winners then
    losers, then ``B`` mismatched values when ``has_mismatched``): ``chosen``, ``rejected`` for
    pairs (``sides == 2``), and ``terms["kl_mismatched"]``."""
    sur = Surrogate(chosen=values[:rows], rejected=values[rows:2 * rows] if sides == 2 else None)
    if has_mismatched:
        sur.terms[KL_MISMATCHED] = values[sides * rows:]
    return sur
