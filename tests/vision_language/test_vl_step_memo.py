"""What the policy and the reference forward of one step share on the vision-language path:
the packed layout always, the image features when the vision side is frozen (a LoRA policy
whose reference is the same model with its adapters off), never the features of a model whose
vision tower trains. Shared or not, the reference surrogate is the one computed alone."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mmalign.modalities.tokens.scoring import PACKED_LAYOUT
from mmalign.modalities.vision_language import LORA_TARGETS, vision
from mmalign.train import adapters

sys.path.insert(0, str(Path(__file__).parent))
from vl_helpers import tiny_modality, write_colour_set  # noqa: E402


@pytest.fixture
def batch_of(tmp_path):
    def make(modality):
        records = modality.load_records(write_colour_set(tmp_path / "data"), "rlaif_v")[:4]
        batch = modality.collate(records)
        return batch, modality.draw(batch, 0, None)
    return make


@pytest.fixture
def vision_calls(monkeypatch):
    """How many times the vision tower and projector run."""
    calls = []
    real = vision.media_features
    monkeypatch.setattr(vision, "media_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def lora_policy():
    modality, policy = tiny_modality()
    adapters.add_lora(policy, r=4, alpha=8, dropout=0.0, target_modules=LORA_TARGETS)
    with torch.no_grad():  # adapters away from zero, so policy and reference differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return modality, policy


def test_adapters_off_reference_reuses_the_policys_image_features(batch_of, vision_calls, one_thread):
    modality, policy = lora_policy()
    batch, draw = batch_of(modality)
    needs = frozenset({"token_logps"})
    modality.surrogate(policy, batch, draw, needs)
    layout = batch.frozen[PACKED_LAYOUT]
    switch = adapters.disabler(policy)
    with torch.no_grad(), switch(policy):
        shared = modality.surrogate(policy, batch, draw, needs)
    assert len(vision_calls) == 1 and batch.frozen[PACKED_LAYOUT] is layout

    alone, _ = batch_of(modality)  # a fresh batch: nothing memoised
    with torch.no_grad(), adapters.adapters_disabled(policy):
        expected = modality.surrogate(policy, alone, draw, needs)
    assert len(vision_calls) == 2
    assert torch.equal(shared.chosen, expected.chosen) and torch.equal(shared.rejected, expected.rejected)
    with torch.no_grad():
        live = modality.surrogate(policy, alone, draw, needs)
    assert not torch.allclose(live.chosen, expected.chosen)  # the switch did turn the adapters off


def test_a_trained_vision_tower_is_run_again(batch_of, vision_calls):
    modality, policy = tiny_modality()  # full fine-tuning: every weight trains
    batch, draw = batch_of(modality)
    modality.surrogate(policy, batch, draw, frozenset({"token_logps"}))
    modality.surrogate(policy, batch, draw, frozenset({"token_logps"}))
    assert len(vision_calls) == 2


def test_disabler_restores_grad_flags_and_adapters():
    _, policy = lora_policy()
    flags = {n: p.requires_grad for n, p in policy.named_parameters()}
    switch = adapters.disabler(policy)
    with switch(policy) as inside:
        assert inside is policy
        assert all(layer.disable_adapters for layer in adapters.tuner_layers(policy))
    assert not any(layer.disable_adapters for layer in adapters.tuner_layers(policy))
    assert flags == {n: p.requires_grad for n, p in policy.named_parameters()}
