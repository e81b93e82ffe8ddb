"""Latent layouts: the plugin's one convention and each transformer's own.

Every latent this plugin holds (VAE posteriors, noise, targets, predictions) is
``[N, C, T, H, W]``, what both causal video VAEs give. A transformer that takes another layout
says so once, in :data:`mmalign.models.video_diffusion.KINDS` (``layout``), and the forward
converts on the way in and back on the way out (:func:`to_model`, :func:`from_model`). The
target and the per-sample mean are therefore computed on one grid for every model; the mean
over all non-batch dims is the same in any order of them.
"""
from __future__ import annotations

from torch import Tensor

#: the plugin's layout (the VAEs')
CANONICAL = "BCTHW"
LAYOUTS = ("BCTHW", "BTCHW")


def _order(source: str, target: str) -> tuple[int, ...]:
    for layout in (source, target):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown latent layout {layout!r}; one of {', '.join(LAYOUTS)}")
    return tuple(source.index(axis) for axis in target)


def to_model(x: Tensor, layout: str) -> Tensor:
    """``[N, C, T, H, W]`` -> the transformer's ``layout``."""
    return x.permute(_order(CANONICAL, layout))


def from_model(x: Tensor, layout: str) -> Tensor:
    """The transformer's ``layout`` -> ``[N, C, T, H, W]``."""
    return x.permute(_order(layout, CANONICAL))
