"""A tiny model and a few rows of this plugin, for ``mmalign check-plugin image_flow``."""
from __future__ import annotations

from typing import Any

from mmalign.modality import ModelSpec

from mmalign.modalities.image_diffusion.example import example as image_pairs


def example(folder: str) -> dict[str, Any]:
    """The tiny SD3-class transformer at 32 px on the image plugin's four warm-over-cold pairs."""
    return {**image_pairs(folder), "spec": ModelSpec(builder="tiny_sd3"),
            "options": {"resolution": 32, "max_sequence_length": 16}}
