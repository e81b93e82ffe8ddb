"""Fixtures of the audio-diffusion tests: tiny WAV pairs written once per session."""
from __future__ import annotations

import pytest

from mmalign.modalities.audio_diffusion.example import write_pairs


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> str:
    """Four low-over-high tone pairs of 1 s, 8 kHz mono WAV."""
    return str(write_pairs(tmp_path_factory.mktemp("audio_pairs")))
