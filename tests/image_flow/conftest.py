"""Fixtures of the image-flow tests: the image plugin's tiny Pick-a-Pic table."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image_diffusion"))

from diffusion_helpers import pickapic_rows, write_parquet  # noqa: E402


@pytest.fixture
def pickapic_file(tmp_path) -> str:
    return write_parquet(tmp_path / "pickapic.parquet", pickapic_rows())


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
