"""Helpers of the image-flow tests."""
from __future__ import annotations

import torch

from mmalign.modality import ModelSpec

from mmalign.modalities.image_flow import ImageFlowModality

KINDS = {"sd3": ("tiny_sd3", {}), "flux": ("tiny_flux", {}), "flux_dev": ("tiny_flux", {"guidance_embeds": True})}


def make_modality(case: str = "sd3", **options):
    options.setdefault("resolution", 32)
    options.setdefault("max_sequence_length", 16)
    builder, args = KINDS[case]
    modality = ImageFlowModality(**options)
    policy = modality.load_policy(ModelSpec(builder=builder, builder_args=args))
    return modality, policy


def transformer_output(model, kind: str) -> torch.Tensor:
    """The transformer on fixed inputs (16 x 16 latents, 5 text tokens), as its pipeline calls it."""
    from mmalign.modalities.image_flow.forward import flux_prediction, sd3_prediction

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, 16, generator=gen)
    t = torch.tensor([0.2, 0.7])
    embeds = torch.randn(2, 5, 32, generator=gen)
    with torch.no_grad():
        if kind == "sd3":
            return sd3_prediction(model, x, t, embeds, torch.randn(2, 32, generator=gen))
        return flux_prediction(model, x, t, embeds, torch.randn(2, 16, generator=gen), guidance=3.5)
