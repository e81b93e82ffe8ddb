"""Exports of a Qwen2.5-VL video policy reload in transformers and peft and score the clips as
the model that was saved: the peft adapter (transformers' ``load_adapter`` and peft's
``PeftModel``), the merged model (``from_pretrained``, no peft) and a fully fine-tuned model
through ``load_policy``; the saved processor makes the same tokens and pixels."""
from __future__ import annotations

import torch
import pytest
from peft import LoraConfig, PeftModel
from torch.testing import assert_close

pytest.importorskip("decord")
pytest.importorskip("av")

from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from mmalign.models.qwen_vl import tiny_qwen25_vl  # noqa: E402
from mmalign.modality import ModelSpec  # noqa: E402
from mmalign.testing import pair_scores  # noqa: E402
from mmalign.train.adapters import inject  # noqa: E402

from tests.video.clip_rows import tiny_modality, write_video_rows  # noqa: E402


def test_adapter_and_merged_exports_reload(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    modality, policy = tiny_modality("tiny_qwen25_vl", export_merged=True)
    records = modality.load_records(write_video_rows(tmp_path / "data"), "vision_language:video_qa")
    inject(policy, LoraConfig(r=4, lora_alpha=4, target_modules=modality.lora_target_modules,
                              init_lora_weights=False))
    expected = pair_scores(modality, policy, records)
    out = tmp_path / "export"
    modality.export(policy, str(out), "card")
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    assert (out / "merged" / "model.safetensors").exists()

    base = tiny_qwen25_vl()  # the same seed rebuilds the base weights
    assert not torch.allclose(pair_scores(modality, base, records), expected)
    base.load_adapter(str(out))
    assert_close(pair_scores(modality, base, records), expected, atol=1e-5, rtol=0)
    wrapped = PeftModel.from_pretrained(tiny_qwen25_vl(), str(out))
    assert_close(pair_scores(modality, wrapped.get_base_model(), records), expected, atol=1e-5, rtol=0)
    merged = AutoModelForImageTextToText.from_pretrained(out / "merged", local_files_only=True)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert_close(pair_scores(modality, merged, records), expected, atol=1e-5, rtol=0)

    reloaded = AutoProcessor.from_pretrained(out / "merged", local_files_only=True)
    again, _ = tiny_modality("tiny_qwen25_vl")
    again.processor = reloaded
    batch, batch_again = modality.collate(records), again.collate(again.load_records(records[0]["file"], "video_qa"))
    assert batch.inputs["prompt_ids"] == batch_again.inputs["prompt_ids"]
    assert all(torch.equal(batch.inputs["media"][k], batch_again.inputs["media"][k]) for k in batch.inputs["media"])


def test_full_export_reloads_through_load_policy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    modality, policy = tiny_modality("tiny_qwen25_vl")
    records = modality.load_records(write_video_rows(tmp_path / "data"), "vision_language:video_qa")
    with torch.no_grad():  # away from the seed-0 weights the builder gives
        policy.lm_head.weight.mul_(1.5)
    modality.export(policy, str(tmp_path / "full"), "card")
    reloaded_modality, _ = tiny_modality("tiny_qwen25_vl")
    reloaded = reloaded_modality.load_policy(ModelSpec(path=str(tmp_path / "full")))
    assert_close(pair_scores(reloaded_modality, reloaded, records), pair_scores(modality, policy, records), atol=1e-5, rtol=0)
