"""Real SD3.5 / FLUX checkpoints through the same code: skipped unless MMALIGN_SD3_PATH /
MMALIGN_FLUX_PATH name a local StableDiffusion3Pipeline / FluxPipeline folder. The same code
paths run on the tiny stand-ins in test_flow_modality.py and test_flow_surrogate_golden.py."""
from __future__ import annotations

import os

import pytest
import torch

from mmalign.modality import ModelSpec

from mmalign.modalities.image_flow import ImageFlowModality

from diffusion_helpers import pickapic_rows, write_parquet

PATHS = {"sd3": os.environ.get("MMALIGN_SD3_PATH"), "flux": os.environ.get("MMALIGN_FLUX_PATH")}


@pytest.mark.weights
@pytest.mark.parametrize("kind", sorted(PATHS))
def test_real_checkpoint_cached_and_live_surrogates_agree(kind, tmp_path):
    if not PATHS[kind]:
        pytest.skip(f"set MMALIGN_{kind.upper()}_PATH to a local {kind} diffusers folder; CPU stand-ins: "
                    "test_flow_modality.py and test_flow_surrogate_golden.py on the tiny models")
    modality = ImageFlowModality(resolution=256, max_sequence_length=64)
    policy = modality.load_policy(ModelSpec(path=PATHS[kind], dtype=torch.bfloat16))
    assert modality.parts.kind == kind and modality.parts.vae.config.latent_channels == 16
    path = write_parquet(tmp_path / "p.parquet", pickapic_rows(1))
    records = modality.load_records(path, "pickapic")
    cached, live = modality.collate(modality.prepare(records, str(tmp_path / "cache"))), modality.collate(records)
    draw = modality.draw(live, 0, policy)
    with torch.no_grad():
        a = modality.surrogate(policy, cached, draw, frozenset())
        b = modality.surrogate(policy, live, draw, frozenset())
    torch.testing.assert_close(a.chosen, b.chosen, rtol=0, atol=1e-3)
    assert bool(torch.isfinite(a.chosen).all()) and bool((a.chosen < 0).all())
