"""Fixtures of the video-diffusion tests: tiny MP4 pairs written once per session."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign.modalities.video_diffusion.example import write_pairs  # noqa: E402


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> str:
    """Four warm-over-cold pairs of 9-frame 32 x 32 MP4 clips, with a score per pair."""
    return str(write_pairs(tmp_path_factory.mktemp("video_pairs")))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
