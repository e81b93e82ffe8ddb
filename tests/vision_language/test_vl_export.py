"""Exports reload in transformers / peft and give the outputs of the model that was saved."""
from __future__ import annotations

import os

import torch
from peft import LoraConfig, PeftModel
from torch.testing import assert_close

from mmalign.models.llava import tiny_llava
from mmalign.modality import ModelSpec
from mmalign.train.adapters import inject


def _chosen(modality, model, records):
    with torch.no_grad():
        batch = modality.collate(records)
        return modality.surrogate(model, batch, modality.draw(batch, 0), frozenset()).chosen


def test_full_export_reloads_through_load_policy(pair_records, tmp_path, modality_with_policy):
    modality, policy, records = pair_records
    with torch.no_grad():  # move away from the seed-0 initialisation the builder would give
        policy.lm_head.weight.mul_(1.5)
    written = modality.export(policy, str(tmp_path / "out"), "# tiny LLaVA\n")
    names = {os.path.basename(p) for p in written}
    assert {"config.json", "model.safetensors", "README.md"} <= names
    assert (tmp_path / "out" / "README.md").read_text() == "# tiny LLaVA\n"
    reloaded_modality, _ = modality_with_policy()
    reloaded = reloaded_modality.load_policy(ModelSpec(path=str(tmp_path / "out")))
    assert_close(_chosen(reloaded_modality, reloaded, [dict(r) for r in records]), _chosen(modality, policy, records),
                 atol=1e-6, rtol=0)


def test_lora_targets_only_the_language_model_and_exports_an_adapter(pair_records, tmp_path):
    modality, policy, records = pair_records
    # init_lora_weights=False: random B, so the adapter changes the outputs from the start
    inject(policy, LoraConfig(r=4, lora_alpha=4, target_modules=modality.lora_target_modules,
                                  init_lora_weights=False))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in policy.named_parameters() if ".lora_A" in name}
    assert adapted and all(".language_model." in name for name in adapted)
    assert {name.rsplit(".", 1)[1] for name in adapted} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    expected = _chosen(modality, policy, records)
    written = modality.export(policy, str(tmp_path / "adapter"), "card")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {os.path.basename(p) for p in written}
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # the adapter only
    base = tiny_llava()  # the same seed rebuilds the base weights
    assert not torch.allclose(_chosen(modality, base, records), expected)
    base.load_adapter(str(tmp_path / "adapter"))  # transformers' loader
    assert_close(_chosen(modality, base, records), expected, atol=1e-6, rtol=0)
    wrapped = PeftModel.from_pretrained(tiny_llava(), str(tmp_path / "adapter"))  # peft's own
    assert_close(_chosen(modality, wrapped.get_base_model(), records), expected, atol=1e-6, rtol=0)
