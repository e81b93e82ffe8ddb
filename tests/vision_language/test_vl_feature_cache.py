"""``cache_image_features``: projected image features computed once in ``prepare`` when the
vision side is frozen (LoRA on the language model), and the same surrogates and training as
computing them live."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from vl_helpers import vl_recipe, write_colour_set

from mmalign.train.adapters import add_lora
from mmalign.train.run import train

ATOL, RTOL = 1e-5, 1.3e-6
NEEDS = frozenset({"token_logps", "hidden"})


def _lora(modality, policy):
    return add_lora(policy, r=4, alpha=8, dropout=0.0, target_modules=modality.lora_target_modules)


@pytest.mark.parametrize("packed", [True, False])
def test_cached_features_give_the_same_surrogate_without_the_vision_tower(make_pairs, tmp_path, packed):
    modality, policy, records = make_pairs(cache_image_features=True, packed=packed)
    _lora(modality, policy)
    cached = modality.prepare(records, str(tmp_path / "cache"))
    assert all("media_features" in r for r in cached) and not any("media_features" in r for r in records)
    assert modality.prepare(records, str(tmp_path / "cache"))[0]["media_features"] == cached[0]["media_features"]
    calls = []
    handle = policy.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            live = modality.surrogate(policy, modality.collate(records), None, NEEDS)
            runs = len(calls)
            again = modality.surrogate(policy, modality.collate(cached), None, NEEDS)
    finally:
        handle.remove()
    # the packed path reads the cached features; the naive one (the model's own forward, for
    # comparison) still runs the tower on pixel values made from the images
    assert runs == 1 and len(calls) == (1 if packed else 2)
    for name in ("chosen", "rejected", "chosen_units", "rejected_units"):
        assert_close(getattr(again, name), getattr(live, name), atol=ATOL, rtol=RTOL, msg=name)


def test_a_trainable_vision_side_is_not_cached(make_pairs, tmp_path):
    modality, policy, records = make_pairs(cache_image_features=True)  # full fine-tuning: all weights train
    assert modality.prepare(records, str(tmp_path / "cache")) == records


def test_training_with_the_cache_matches_training_without(tmp_path, one_thread):
    """Three DPO steps through the trainer, LoRA on the language model: same losses either way."""
    data = write_colour_set(tmp_path / "data")
    runs = {}
    for cached in (False, True):
        recipe = vl_recipe(tmp_path / f"run{cached}", data, train={"max_steps": 3},
                           model={"options": {"max_length": 64, "cache_image_features": cached}})
        session = train(recipe)
        runs[cached] = [h["loss"] for h in session.history if "loss" in h]
    assert (tmp_path / "runTrue" / "cache").is_dir() and not (tmp_path / "runFalse" / "cache").exists()
    assert runs[True] == pytest.approx(runs[False], rel=1e-5, abs=1e-6)
    assert runs[True][0] != runs[True][-1]
