"""Helpers of the video-diffusion tests."""
from __future__ import annotations

import torch

from mmalign.modality import ModelSpec

from mmalign.modalities.video_diffusion import VideoDiffusionModality

#: case -> (builder, builder_args)
KINDS = {"wan": ("tiny_wan", {}), "cogvideox": ("tiny_cogvideox", {}),
         "cogvideox_2b": ("tiny_cogvideox", {"rotary": False})}
TINY = {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": None}


def make_modality(case: str = "wan", **options):
    for key, value in TINY.items():
        options.setdefault(key, value)
    if case == "wan" and options["max_sequence_length"] is None:
        options["max_sequence_length"] = 16
    builder, args = KINDS[case]
    modality = VideoDiffusionModality(**options)
    policy = modality.load_policy(ModelSpec(builder=builder, builder_args=args))
    return modality, policy


def transformer_output(model, kind: str) -> torch.Tensor:
    """The transformer on fixed inputs (3 latent frames of 4 x 4, 16 text tokens), in the
    plugin's [N, C, T, H, W] layout, as its pipeline calls it."""
    from mmalign.models.video_diffusion import KINDS
    from mmalign.modalities.video_diffusion.forward import cogvideox_prediction, wan_prediction

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 4, 4, generator=gen)
    embeds = torch.randn(2, 16, 32, generator=gen)
    with torch.no_grad():
        if kind == "wan":
            return wan_prediction(model, x, torch.tensor([0.2, 0.7]), embeds, KINDS[kind].layout)
        return cogvideox_prediction(model, x, torch.tensor([200, 700]), embeds, 8, KINDS[kind].layout)
