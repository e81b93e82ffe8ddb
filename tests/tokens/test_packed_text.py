"""Packed ``[prompt | chosen | rejected]`` equals the naive ``2B`` rows on the text plugin: the
surrogates and their gradients, and the losses and surrogates after some DPO steps (at step 0
policy equals reference and every path gives log 2)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

import mmalign.objectives as objectives
from mmalign.modalities.text import TextModality
from mmalign.modality import ModelSpec

ATOL, RTOL = 1e-5, 1.3e-6
NEEDS = frozenset({"token_logps", "vocab_logps", "hidden"})
RECORDS = [{"sample_id": "a", "prompt": "Hi", "chosen": "yo", "rejected": "no way"},
           {"sample_id": "b", "prompt": "Tell me more", "chosen": "a longer answer", "rejected": "x"},
           {"sample_id": "c", "prompt": [{"role": "user", "content": "Sky?"}], "chosen": "blue", "rejected": "grey"}]


@pytest.fixture(scope="module")
def text():
    modality = TextModality(max_length=64)
    return modality, modality.load_policy(ModelSpec(builder="tiny_llama"))


def _run(modality, model, batch, packed):
    modality.options.packed = packed
    model.zero_grad()
    out = modality.surrogate(model, batch, modality.draw(batch, 0, model), NEEDS)
    hidden = out.extras["hidden_rejected"] * out.rejected_mask.unsqueeze(-1)  # past a response: padding
    (out.chosen.sum() - 0.5 * out.rejected.sum() + hidden.pow(2).mean()
     + out.extras["vocab_logps_chosen"].exp().pow(2).mean()).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_packed_equals_naive_values_and_gradients(text, one_thread):
    modality, model = text
    batch = modality.collate(RECORDS)
    (packed, packed_grads), (naive, naive_grads) = _run(modality, model, batch, True), _run(modality, model, batch, False)
    for name in ("chosen", "rejected", "chosen_units", "rejected_units"):
        assert_close(getattr(packed, name), getattr(naive, name), atol=ATOL, rtol=RTOL, msg=name)
    for key in packed.extras:
        mask = (packed.chosen_mask if key.endswith("chosen") else packed.rejected_mask).unsqueeze(-1)
        assert_close(packed.extras[key] * mask, naive.extras[key] * mask, atol=ATOL, rtol=RTOL, msg=key)
    assert packed_grads.keys() == naive_grads.keys() and packed_grads
    for name in packed_grads:
        assert_close(packed_grads[name], naive_grads[name], atol=ATOL, rtol=1e-4, msg=name)


def test_packed_and_naive_train_alike(text, one_thread):
    modality, start = text
    batch = modality.collate(RECORDS)
    dpo, runs = objectives.get("dpo"), {}
    for packed in (True, False):
        modality.options.packed = packed
        policy, reference = copy.deepcopy(start), copy.deepcopy(start).requires_grad_(False)
        optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
        losses = []
        for _ in range(3):
            with torch.no_grad():
                ref = modality.surrogate(reference, batch, None, frozenset())
            loss = dpo(modality.surrogate(policy, batch, None, frozenset()), ref, beta=0.5).loss.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        with torch.no_grad():
            runs[packed] = (torch.stack(losses), modality.surrogate(policy, batch, None, frozenset()))
    modality.options.packed = False
    assert_close(runs[True][0], runs[False][0], atol=ATOL, rtol=RTOL)
    assert not torch.allclose(runs[True][0][0], runs[True][0][-1])  # training moved the loss
    assert_close(runs[True][1].chosen, runs[False][1].chosen, atol=1e-4, rtol=0)
    assert_close(runs[True][1].rejected, runs[False][1].rejected, atol=1e-4, rtol=0)
