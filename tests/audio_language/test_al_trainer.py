"""Qwen2-Audio DPO driven by the trainer: audio-encoder work per pair per step (LoRA: 1,
shared by the adapters-off reference; with ``cache_vision_features``: 0 per step, once per
sound before training; full fine-tuning with a frozen copy: 2), the precomputed reference on
sounds, cached features against live ones, exports that reload, and ``stats``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel
from torch.testing import assert_close
from transformers import AutoModelForMultimodalLM
from transformers.models.qwen2_audio import modeling_qwen2_audio

from mmalign import config
from mmalign.models.qwen2_audio import tiny_qwen2_audio
from mmalign.testing import pair_scores
from mmalign.train.adapters import inject
from mmalign.train.run import train

from tests.audio_language.sound_rows import tiny_modality, write_audio_rows

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS, BATCH, STEPS = 4, 2, 3
BASE = {
    "model": {"modality": "audio_language", "builder": "tiny_qwen2_audio", "lora": {"r": 4, "alpha": 8},
              "options": {"max_length": 128}},
    "data": {"schema": "audio_qa"},
    "objective": {"name": "dpo", "params": {"beta": 0.5}},
    "reference": {"strategy": "adapters_off"},
    "train": {"seed": 0, "batch_size": BATCH, "lr": 1e-2, "max_steps": STEPS, "first_step_checks": False},
    "eval": {"every": 0},
    "logging": {"every": 1, "tensorboard": False, "progress": False},
}


def audio_recipe(out_dir: Path, data: str, **sections) -> config.Recipe:
    raw = config.merge(BASE, {"data": {"train": data}, "logging": {"output_dir": str(out_dir)}})
    return config.from_dict(config.merge(raw, sections), source=f"<{Path(out_dir).name}>")


@pytest.fixture
def sounds_encoded(monkeypatch):
    counts: list[int] = []
    encoder = modeling_qwen2_audio.Qwen2AudioEncoder
    real = encoder.forward

    def counting(self, input_features, *args, **kwargs):
        counts.append(int(input_features.shape[0]))
        return real(self, input_features, *args, **kwargs)

    monkeypatch.setattr(encoder, "forward", counting)
    return counts


@pytest.mark.parametrize("arm, per_pair_per_step, before", [("lora", 1, 0), ("lora_cached", 0, PAIRS), ("full", 2, 0)])
def test_audio_encoder_runs_per_pair_per_step(arm, per_pair_per_step, before, tmp_path, sounds_encoded):
    data = write_audio_rows(tmp_path / "data", PAIRS)
    sections = {"lora": {}, "full": {"model": {"lora": None}, "reference": {"strategy": "copy"}},
                "lora_cached": {"model": {"options": {"cache_vision_features": True}}}}[arm]
    session = train(audio_recipe(tmp_path / arm, data, **sections))
    assert len([h for h in session.history if "loss" in h]) == STEPS
    assert sum(sounds_encoded) == before + per_pair_per_step * BATCH * STEPS


def test_precomputed_reference_on_sounds_equals_live(tmp_path):
    data = write_audio_rows(tmp_path / "data", PAIRS)
    live = train(audio_recipe(tmp_path / "live", data))
    stored = train(audio_recipe(tmp_path / "pre", data,
                                reference={"strategy": "precomputed", "precompute_with": "adapters_off"}))
    losses = [[h["loss"] for h in s.history if "loss" in h] for s in (live, stored)]
    assert stored.reference.store is not None and losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_cached_features_give_the_live_surrogate(tmp_path):
    modality, policy = tiny_modality(cache_vision_features=True)
    policy.requires_grad_(False)
    records = modality.load_records(write_audio_rows(tmp_path / "data"), "audio_qa")
    with torch.no_grad():
        batch = modality.collate(records)
        live = modality.surrogate(policy, batch, modality.draw(batch, 0), frozenset())
        cached_batch = modality.collate(modality.prepare(records, str(tmp_path / "cache")))
        cached = modality.surrogate(policy, cached_batch, modality.draw(cached_batch, 0), frozenset())
    assert cached_batch.inputs["media"] is None  # nothing decoded: the features were read
    assert_close(cached.chosen, live.chosen, atol=1e-5, rtol=0)


def test_adapter_and_merged_exports_reload(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    modality, policy = tiny_modality(export_merged=True)
    records = modality.load_records(write_audio_rows(tmp_path / "data"), "audio_qa")
    inject(policy, LoraConfig(r=4, lora_alpha=4, target_modules=modality.lora_target_modules,
                              init_lora_weights=False))
    assert all(".language_model." in n for n in modality.lora_target_modules)
    expected = pair_scores(modality, policy, records)
    modality.export(policy, str(tmp_path / "out"), "card")
    base = tiny_qwen2_audio()
    base.load_adapter(str(tmp_path / "out"))
    assert_close(pair_scores(modality, base, records), expected, atol=1e-5, rtol=0)
    wrapped = PeftModel.from_pretrained(tiny_qwen2_audio(), str(tmp_path / "out"))
    assert_close(pair_scores(modality, wrapped.get_base_model(), records), expected, atol=1e-5, rtol=0)
    merged = AutoModelForMultimodalLM.from_pretrained(tmp_path / "out" / "merged", local_files_only=True)
    assert_close(pair_scores(modality, merged, records), expected, atol=1e-5, rtol=0)


def test_stats_give_tokens_per_sound(tmp_path):
    modality, _ = tiny_modality()
    figures = modality.stats(modality.load_records(write_audio_rows(tmp_path), "audio_qa"))
    assert figures["sounds"] == 4 and "images" not in figures and "clips" not in figures  # kinds it cannot read
    assert (figures["tokens_per_sound_min"], figures["tokens_per_sound_max"]) == (12, 25)
