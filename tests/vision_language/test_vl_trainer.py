"""The vision-language modality driven by the trainer (``mmalign.train.run.train``) and by
``mmalign eval`` (``mmalign.evaluate.run_eval``), on the tiny LLaVA with LoRA.

Data: flat-colour images asked "what color is the image?", chosen answer the colour shown,
rejected another colour that is the chosen answer of other rows (``vl_helpers``), so only the
image separates chosen from rejected.
"""
from __future__ import annotations

import json

import pytest
import torch
from vl_helpers import mean, vl_recipe, write_annotated_set, write_colour_set

from mmalign.errors import ConfigError
from mmalign.evaluate import run_eval
from mmalign.modalities.vision_language import VisionLanguageModality
from mmalign.modalities.vision_language.evaluators import CAPTION_PROMPT, read_annotated_images
from mmalign.modalities.vision_language.hallucination import chair
from mmalign.modalities.vision_language.objects import load_vocabulary
from mmalign.modality import ModelSpec
from mmalign.train.run import build, train


pytestmark = pytest.mark.usefixtures("one_thread")  # runs compared with each other


def history(session, key: str) -> list[float]:
    return [h[key] for h in session.history if key in h]


def test_dpo_run_lowers_loss_and_raises_accuracy(tmp_path):
    """Eight steps of DPO (beta 0.5, LoRA r 4, lr 2e-2, batch 4 of 8 rows). At step 1 policy
    equals reference (LoRA's B starts at 0), so the loss is log 2 and every margin a tie
    (accuracy 0.5 by the tie rule); afterwards the loss must fall and the accuracy rise."""
    session = train(vl_recipe(tmp_path / "run", write_colour_set(tmp_path / "data")))
    losses, accuracies = history(session, "loss"), history(session, "rewards/accuracies")
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)
    assert accuracies[0] == 0.5
    assert mean(losses[-3:]) < losses[0] - 0.05, losses
    assert mean(accuracies[-3:]) >= 0.9, accuracies
    assert mean(history(session, "rewards/margins")[-3:]) > 0
    assert (tmp_path / "run" / "export" / "adapter_config.json").is_file()


def adapters_off_reference(session, records):
    """The live adapters-off reference of ``records``: the session's LoRA policy with its
    adapters disabled layer by layer through peft's own toggle, under no_grad."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    modality, policy = session.modality, session.policy
    batch = modality.collate(records)
    draw = modality.draw(batch, session.recipe.train.seed, policy)
    layers = [m for m in policy.modules() if isinstance(m, BaseTunerLayer)]
    assert layers
    for layer in layers:
        layer.enable_adapters(False)
    try:
        with torch.no_grad():
            return modality.surrogate(policy, batch, draw, session.needs)
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def stored_reference(session, records, like):
    """The precomputed reference rows of ``records``, padded like ``like``."""
    batch = session.modality.collate(records)
    return session.reference.store.lookup(batch, like=like)


def test_precomputed_reference_equals_live_adapters_off(tmp_path):
    """The reference stored before training (adapters off) equals the live adapters-off one
    on every [B] value and per-token term (1e-6), and both runs log the same losses for all
    five steps (the policy updates see the same reference)."""
    data = write_colour_set(tmp_path / "data")
    live = train(vl_recipe(tmp_path / "live", data, train={"max_steps": 5}))
    stored = train(vl_recipe(tmp_path / "pre", data, train={"max_steps": 5},
                             reference={"strategy": "precomputed", "precompute_with": "adapters_off"}))
    assert stored.reference.store is not None and live.reference.store is None
    records = stored.train_records[:5]
    ref_live = adapters_off_reference(live, records)
    ref_stored = stored_reference(stored, records, like=ref_live)
    for name in ("chosen", "rejected", "chosen_units", "rejected_units"):
        torch.testing.assert_close(getattr(ref_stored, name), getattr(ref_live, name), atol=1e-6, rtol=0)
    assert torch.equal(ref_stored.chosen_mask, ref_live.chosen_mask)
    assert history(stored, "loss") == pytest.approx(history(live, "loss"), abs=1e-6)
    assert history(live, "loss")[-1] < history(live, "loss")[0]


def test_mdpo_runs_through_the_trainer(tmp_path):
    """mDPO with each row's rejected image (the wrong colour's image): the conditional term
    ``-log sigmoid(r(y_w | m) - r(y_w | m'))`` starts at log 2 and falls, as does the total."""
    data = write_colour_set(tmp_path / "data", rejected_image=True)
    session = train(vl_recipe(tmp_path / "run", data, objective={"name": "mdpo", "params": {"beta": 0.5}}))
    conditional = history(session, "loss/conditional")
    assert conditional[0] == pytest.approx(0.6931, abs=1e-3)
    assert mean(conditional[-3:]) < conditional[0] - 0.02, conditional
    # step 1: L_DPO = L_CoPO = L_AncPO = log 2 (all rewards 0)
    assert history(session, "loss")[0] == pytest.approx(3 * 0.6931, abs=3e-3)
    assert mean(history(session, "loss")[-3:]) < history(session, "loss")[0]


def test_dense_dpo_runs_through_the_trainer(tmp_path):
    """Dense DPO reads the changed-token fields: chosen "the image is red ." and rejected
    "the image is blue ." differ in one of their 5 tokens + EOS, so the changed share of each
    response is 1/6; the loss falls from log 2."""
    session = train(vl_recipe(tmp_path / "run", write_colour_set(tmp_path / "data"),
                              objective={"name": "dense_dpo", "params": {"beta": 0.5, "gamma": 5.0}}))
    assert history(session, "dense/changed_chosen")[0] == pytest.approx(1 / 6, abs=1e-6)
    assert history(session, "dense/changed_rejected")[0] == pytest.approx(1 / 6, abs=1e-6)
    losses = history(session, "loss")
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)
    assert mean(losses[-3:]) < losses[0] - 0.02, losses


def test_tdpo_with_precomputed_reference_is_refused(tmp_path):
    """TDPO needs the reference's [tokens x vocabulary] log-probs, which a precomputed
    reference does not store: the trainer refuses the recipe before loading any model."""
    recipe = vl_recipe(tmp_path / "run", write_colour_set(tmp_path / "data"),
                       objective={"name": "tdpo", "params": {"beta": 0.5}},
                       reference={"strategy": "precomputed", "precompute_with": "adapters_off"})
    with pytest.raises(ConfigError, match="'precomputed' cannot store vocab_logps"):
        build(recipe)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before the run dir is made


def test_eval_reports_chair_and_pope(tmp_path):
    """``run_eval`` with ``eval.evaluators: [chair, pope]`` returns their metrics next to the
    held-out preference metrics, and CHAIR equals CHAIR computed by hand from the greedy
    captions of the same (untrained) policy: LoRA's B starts at 0, so the LoRA policy answers
    exactly as the base model built from the same builder seed."""
    data = write_colour_set(tmp_path / "data")
    annotated = write_annotated_set(tmp_path / "data")
    recipe = vl_recipe(tmp_path / "eval_run", data, model={"options": {"max_length": 64, "max_new_tokens": 6}},
                       eval={"evaluators": ["chair", "pope"], "data": annotated,
                             "options": {"pope": {"per_image": 1, "setting": "random"}}})
    results = run_eval(recipe)
    for key in ("chair/CHAIR_s", "chair/CHAIR_i", "pope/accuracy", "pope/f1", "pope/yes_ratio", "eval/loss"):
        assert key in results, sorted(results)
    assert results["eval/loss"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference
    for key in ("pope/accuracy", "pope/yes_ratio", "chair/CHAIR_s", "chair/CHAIR_i"):
        assert 0.0 <= results[key] <= 1.0
    assert json.loads((tmp_path / "eval_run" / "eval" / "eval.json").read_text()) == results

    modality = VisionLanguageModality(max_length=64, max_new_tokens=6)
    base = modality.load_policy(ModelSpec(builder="tiny_llava"))
    rows = read_annotated_images(annotated)
    prompts = [{"prompt": CAPTION_PROMPT, "images": [r["image"]], "source": annotated} for r in rows]
    captions = [answers[0] for answers in modality.sample(base, prompts, 1, 0)]
    expected = chair(captions, [r["objects"] for r in rows], load_vocabulary())
    assert results["chair/CHAIR_s"] == pytest.approx(expected["CHAIR_s"], abs=1e-12)
    assert results["chair/CHAIR_i"] == pytest.approx(expected["CHAIR_i"], abs=1e-12)


def test_bundled_recipe_runs_on_the_tiny_model(tmp_path):
    """configs/llava_hallucination_dpo.yaml, pointed at the tiny LLaVA and the colour set, trains
    (LoRA, gradient checkpointing, cosine schedule) and exports a peft adapter."""
    from pathlib import Path

    from mmalign import config

    root = Path(__file__).resolve().parents[2]
    recipe = config.load(root / "configs/llava_hallucination_dpo.yaml", [
        "model.path=null", "model.builder=tiny_llava", "model.dtype=float32", "model.options.max_length=64",
        f"data.train={write_colour_set(tmp_path / 'data')}", "train.batch_size=4", "train.grad_accum=1",
        "train.max_steps=2", "train.warmup_steps=0", "train.mixed_precision='no'",
        f"logging.output_dir={tmp_path / 'run'}", "logging.tensorboard=false", "logging.progress=false",
        "logging.every=1"])
    session = train(recipe)
    assert [h["step"] for h in session.history] == [1, 2]
    assert history(session, "loss")[0] == pytest.approx(0.6931, abs=1e-3)
    assert (tmp_path / "run" / "export" / "adapter_model.safetensors").is_file()
