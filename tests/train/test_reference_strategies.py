"""Every reference strategy trains the tiny text model, and the LoRA strategies agree."""
from __future__ import annotations

import pytest
import torch

from mmalign.train.run import train


def first_last(history, key):
    values = [h[key] for h in history if key in h]
    return sum(values[:3]) / 3, sum(values[-3:]) / 3


@pytest.mark.parametrize("reference, model, objective", [
    ({"strategy": "copy"}, {}, None),
    ({"strategy": "adapters_off"}, {}, None),
    ({"strategy": "precomputed", "precompute_with": "adapters_off"}, {}, None),
    ({"strategy": "copy"}, {"lora": None}, None),  # full fine-tuning, frozen copy
    ({"strategy": "none"}, {}, {"name": "simpo", "params": {"beta": 2.0, "gamma": 0.5}}),
])
def test_each_strategy_lowers_loss_and_raises_accuracy(make_recipe, reference, model, objective):
    extra = {"objective": objective} if objective else {}
    recipe = make_recipe(reference=reference, model=model, train={"max_steps": 20}, **extra)
    session = train(recipe)
    loss0, loss1 = first_last(session.history, "loss")
    acc0, acc1 = first_last(session.history, "rewards/accuracies")
    assert loss1 < loss0 - 0.05, (loss0, loss1)
    assert acc1 > acc0 and acc1 >= 0.9, (acc0, acc1)


def reference_on(session, records):
    batch = session.modality.collate(records).to(session.accelerator.device)
    draw = session.modality.draw(batch, 0, session.policy)
    like = session.modality.surrogate(session.policy, batch, draw, session.needs)
    return session.reference.surrogate(session.modality, session.scorer, batch, draw,
                                       session.needs, like=like)


def test_copy_adapters_off_and_precomputed_agree(make_recipe):
    """One LoRA policy, three references: the same [B] values and the same losses after k steps."""
    runs = {}
    for name, ref in (("copy", {"strategy": "copy"}),
                      ("off", {"strategy": "adapters_off"}),
                      ("pre", {"strategy": "precomputed", "precompute_with": "copy"})):
        runs[name] = train(make_recipe(name, reference=ref, train={"max_steps": 6}))
    records = runs["copy"].train_records[:8]
    refs = {name: reference_on(s, records) for name, s in runs.items()}
    for name in ("off", "pre"):
        torch.testing.assert_close(refs[name].chosen, refs["copy"].chosen, atol=1e-6, rtol=0)
        torch.testing.assert_close(refs[name].rejected, refs["copy"].rejected, atol=1e-6, rtol=0)
    losses = {name: [h["loss"] for h in s.history] for name, s in runs.items()}
    assert losses["copy"][0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 0
    for name in ("off", "pre"):
        assert losses[name] == pytest.approx(losses["copy"], abs=1e-6)
    assert losses["copy"][-1] < losses["copy"][0]
