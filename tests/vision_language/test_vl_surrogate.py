"""The surrogate on the tiny LLaVA: it equals the plain formula, and the packed path (images
and prompt computed once per pair) equals the naive path in values and gradients."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import mmalign.objectives as objectives
from mmalign.data.io import RowRef
from mmalign.modalities.vision_language.images import open_image
from mmalign.objectives.conditional import CORRUPTED

ALL_NEEDS = frozenset({"token_logps", "vocab_logps", "hidden", f"terms:{CORRUPTED}"})
# float32 on CPU: the paths differ only in summation order. Summed log-probs are ~-80, where
# float32 spacing is ~8e-6, so values get rtol 1.3e-6 (torch's float32 default) on top of atol
ATOL, RTOL = 1e-5, 1.3e-6


def plain_logp(policy, processor, record, response: str):
    """log p(response | prompt, images) from the model's own forward over one sequence.

    Derivation: with the sequence ``x = prompt_ids + response_ids + [eos]`` and ``P`` prompt
    tokens, token ``x[P + k]`` is predicted by the logits at position ``P + k - 1``, so
    ``log p = sum_k log_softmax(logits[P + k - 1])[x[P + k]]``.
    """
    where = RowRef(record["file"], record["row"])
    images = [open_image(img, where, "image") for img in record["images"]]
    text = processor.apply_chat_template(record["messages"], add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=images, return_tensors="pt")
    response_ids = processor.tokenizer(response, add_special_tokens=False)["input_ids"] + [
        processor.tokenizer.eos_token_id]
    prompt_len = enc["input_ids"].shape[1]
    ids = torch.cat([enc["input_ids"], torch.tensor([response_ids])], dim=1)
    logits = policy(input_ids=ids, pixel_values=enc["pixel_values"]).logits[0]
    logps = F.log_softmax(logits.float(), dim=-1)
    return sum(logps[prompt_len + k - 1, tok] for k, tok in enumerate(response_ids))


@pytest.mark.parametrize("packed", [True, False])
def test_surrogate_is_summed_response_token_logps(pair_records, packed):
    modality, policy, records = pair_records
    modality.packed = packed
    batch = modality.collate(records)
    with torch.no_grad():
        out = modality.surrogate(policy, batch, modality.draw(batch, 0, policy), frozenset({"token_logps"}))
        expected_chosen = torch.stack([plain_logp(policy, modality.processor, r, r["chosen"]) for r in records])
        expected_rejected = torch.stack([plain_logp(policy, modality.processor, r, r["rejected"]) for r in records])
    assert_close(out.chosen, expected_chosen, atol=ATOL, rtol=RTOL)
    assert_close(out.rejected, expected_rejected, atol=ATOL, rtol=RTOL)
    # the units sum to the totals, and the masks count response tokens plus EOS
    assert_close((out.chosen_units * out.chosen_mask).sum(-1), out.chosen, atol=ATOL, rtol=RTOL)
    assert out.chosen_mask.sum(-1).tolist() == [len(r["chosen_ids"]) for r in records]
    assert out.rejected_mask.sum(-1).tolist() == [len(r["rejected_ids"]) for r in records]


def _scores(modality, policy, batch, packed):
    modality.packed = packed
    policy.zero_grad()
    out = modality.surrogate(policy, batch, modality.draw(batch, 3, policy), ALL_NEEDS)
    # a loss touching every output, so every gradient path is compared; extras past a response
    # are padding (each path points them elsewhere), so they are masked as objectives mask them
    hidden = out.extras["hidden_chosen"] * out.chosen_mask.unsqueeze(-1)
    loss = (out.chosen.sum() - 0.5 * out.rejected.sum() + 0.1 * out.terms[CORRUPTED].sum()
            + hidden.pow(2).mean() + out.extras["vocab_logps_rejected"].exp().pow(2).mean())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _assert_same(a, b, grads_a, grads_b):
    for name in ("chosen", "rejected", "chosen_units", "rejected_units"):
        assert_close(getattr(a, name), getattr(b, name), atol=ATOL, rtol=RTOL, msg=name)
    assert torch.equal(a.chosen_mask, b.chosen_mask) and torch.equal(a.rejected_mask, b.rejected_mask)
    for key in a.extras:
        mask = (a.chosen_mask if key.endswith("chosen") else a.rejected_mask).unsqueeze(-1)
        assert_close(a.extras[key] * mask, b.extras[key] * mask, atol=ATOL, rtol=RTOL, msg=key)
    assert_close(a.terms, b.terms, atol=ATOL, rtol=RTOL)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        assert_close(grads_a[name], grads_b[name], atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_naive_values_and_gradients(make_pairs, attn):
    modality, policy, records = make_pairs({"attn_implementation": attn})
    batch = modality.collate(records)
    packed, packed_grads = _scores(modality, policy, batch, packed=True)
    naive, naive_grads = _scores(modality, policy, batch, packed=False)
    _assert_same(packed, naive, packed_grads, naive_grads)


def test_packed_equals_naive_with_gradient_checkpointing(pair_records):
    modality, policy, records = pair_records
    batch = modality.collate(records)
    reference, reference_grads = _scores(modality, policy, batch, packed=False)
    policy.gradient_checkpointing_enable()
    policy.train()  # checkpointing is active in training mode only (the tiny model has no dropout)
    packed, packed_grads = _scores(modality, policy, batch, packed=True)
    _assert_same(packed, reference, packed_grads, reference_grads)


def test_packed_and_naive_train_alike(pair_records):
    """Three DPO steps (SGD) from the same start give the same losses and surrogates: the
    equality holds after training, not only at step 0 where every path gives log 2."""
    modality, start, records = pair_records
    batch = modality.collate(records)
    dpo = objectives.get("dpo")
    runs = {}
    for packed in (True, False):
        modality.packed = packed
        policy, reference = copy.deepcopy(start), copy.deepcopy(start).requires_grad_(False)
        optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
        losses = []
        for step in range(3):
            draw = modality.draw(batch, step, policy)
            with torch.no_grad():
                ref = modality.surrogate(reference, batch, draw, frozenset({"token_logps"}))
            loss = dpo(modality.surrogate(policy, batch, draw, frozenset({"token_logps"})), ref, beta=0.5).loss.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        with torch.no_grad():
            final = modality.surrogate(policy, batch, modality.draw(batch, 9, policy), frozenset({"token_logps"}))
        runs[packed] = (torch.stack(losses), final)
    assert_close(runs[True][0], runs[False][0], atol=ATOL, rtol=RTOL)
    assert not torch.allclose(runs[True][0][0], runs[True][0][-1])  # training moved the loss
    assert_close(runs[True][1].chosen, runs[False][1].chosen, atol=1e-4, rtol=0)
    assert_close(runs[True][1].rejected, runs[False][1].rejected, atol=1e-4, rtol=0)
