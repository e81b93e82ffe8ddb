"""Fixtures of the video-language tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def clips_encoded(monkeypatch):
    """Clips and images the vision tower of any Qwen2.5-VL model encodes (rows of the
    ``grid_thw`` it is given), one count per call."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

    counts: list[int] = []
    tower = modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel
    real = tower.forward

    def counting(self, hidden_states, grid_thw, **kwargs):
        counts.append(int(grid_thw.shape[0]))
        return real(self, hidden_states, grid_thw, **kwargs)

    monkeypatch.setattr(tower, "forward", counting)
    return counts
