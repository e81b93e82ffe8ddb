"""Qwen2-Audio through the language-model plugin: the packed pair forward equals the naive
two-sequence forward of the model's own backbone (values and gradients, 1e-5), on sounds of
different lengths; the encoder's features come from the same computation as its forward."""
from __future__ import annotations

import torch

from mmalign.surrogate import Draw

from tests.audio_language.sound_rows import tiny_modality, write_audio_rows


def _surrogate_and_grads(modality, policy, batch):
    policy.zero_grad()
    out = modality.surrogate(policy, batch, Draw({}), frozenset({"token_logps"}))
    (out.chosen.sum() - 0.5 * out.rejected.sum()).backward()
    return out, {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}


def test_packed_equals_naive_in_values_and_gradients(tmp_path):
    modality, policy = tiny_modality()
    records = modality.load_records(write_audio_rows(tmp_path), "audio_qa")
    token = modality.processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    # L = seconds * 100 mel frames -> ((L - 1) // 2 + 1 - 2) // 2 + 1 tokens: 1 s 25, 0.5 s 12, 0.75 s 19
    assert [sum(t == token for t in r["prompt_ids"]) for r in records] == [25, 12, 19, 25]
    modality.packed = True
    packed, packed_grads = _surrogate_and_grads(modality, policy, modality.collate(records))
    modality.packed = False
    naive, naive_grads = _surrogate_and_grads(modality, policy, modality.collate(records))
    torch.testing.assert_close(packed.chosen, naive.chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.rejected, naive.rejected, atol=1e-5, rtol=0)
    assert packed_grads.keys() == naive_grads.keys()
    assert any("audio_tower" in n for n in packed_grads)
    for name in packed_grads:
        torch.testing.assert_close(packed_grads[name], naive_grads[name], atol=1e-5, rtol=1e-4, msg=name)
