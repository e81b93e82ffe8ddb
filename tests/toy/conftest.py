"""Fixtures of the toy-world tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def offline_one_thread(monkeypatch):
    """No hub access, one intra-op thread (as the demos run), restored afterwards."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
