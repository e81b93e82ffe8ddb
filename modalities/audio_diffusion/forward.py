"""One denoiser forward of each form on noisy latents, in training layout.

=============  =========================  ================================================
form           ``timestep`` argument      also
=============  =========================  ================================================
ACE-Step       ``t`` in [0, 1], and        ``context_latents``: text2music's source latents
               ``timestep_r = t``           (the silence latent) and an all-ones chunk mask
Tango          the integer DDPM step       ``encoder_hidden_states``: T5 states
=============  =========================  ================================================

These are what ``AceStepPipeline`` passes its transformer, and Tango's UNet call. Rows whose
conditioning has one length run together, on exactly their own tokens (neither denoiser
masks cross-attention here), so a row's output never depends on its batch.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def by_length(embeds: Tensor, lengths: Tensor, run: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``run(rows, embeds[rows, :n])`` for each length ``n``, put back in row order."""
    outs, index = [], []
    for n in sorted(set(lengths.tolist())):
        rows = torch.nonzero(lengths == n).flatten()
        outs.append(run(rows, embeds[rows, :n]))
        index.append(rows)
    order = torch.argsort(torch.cat(index).cpu())
    return torch.cat(outs)[order.to(outs[0].device)]


def ace_context(silence: Tensor, n: int, frames: int) -> Tensor:
    """text2music's ``context_latents`` ``[n, T, 2C]``: the silence latent tiled to ``T``
    frames (the pipeline's source latents) beside an all-ones chunk mask (generate all)."""
    reps = -(-frames // silence.shape[1])
    src = silence.repeat(1, reps, 1)[:, :frames].expand(n, -1, -1)
    return torch.cat([src, torch.ones_like(src)], dim=-1)


def ace_prediction(model: nn.Module, x_t: Tensor, t: Tensor, embeds: Tensor, lengths: Tensor,
                   silence: Tensor) -> Tensor:
    """The DiT's velocity ``[N, T, C]``."""
    dtype = model.dtype
    context = ace_context(silence.to(x_t.device, dtype), len(x_t), x_t.shape[1])

    def run(rows: Tensor, cond: Tensor) -> Tensor:
        tt = t[rows].to(dtype)
        return model(hidden_states=x_t[rows].to(dtype), timestep=tt, timestep_r=tt, encoder_hidden_states=cond.to(dtype),
                     context_latents=context[rows], return_dict=False)[0]

    return by_length(embeds, lengths, run)


def tango_prediction(model: nn.Module, x_t: Tensor, t: Tensor, embeds: Tensor, lengths: Tensor) -> Tensor:
    """The UNet's prediction ``[N, C, f, m]`` (v, with Tango's scheduler)."""
    dtype = model.dtype

    def run(rows: Tensor, cond: Tensor) -> Tensor:
        return model(x_t[rows].to(dtype), t[rows], encoder_hidden_states=cond.to(dtype), return_dict=False)[0]

    return by_length(embeds, lengths, run)
