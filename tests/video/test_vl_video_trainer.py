"""Qwen2.5-VL video DPO driven by the trainer: how often the vision tower runs, the
precomputed reference on clips, and a two-process run against the one-process curve.

Vision-tower work is counted in clips encoded (rows of ``video_grid_thw`` the tower is
given), over a whole run with first-step checks off, so nothing but training steps (and the
cache's one pass in ``prepare``) runs the model:

* LoRA on the language model, reference = the same model with adapters off: each clip is
  encoded once per step, and the reference reads the policy's features (1 per pair per step);
* the same with ``cache_vision_features``: once per clip before training, never in a step (0);
* full fine-tuning with a frozen copy as reference: policy and reference each encode it once
  (2), where a trainer that runs chosen and rejected as two sequences through policy and
  reference encodes it 4 times.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")


from mmalign import config  # noqa: E402
from mmalign.train.run import train  # noqa: E402

from tests.video.clip_rows import write_video_rows  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS, BATCH, STEPS = 4, 2, 3

BASE = {
    "model": {"modality": "vision_language", "builder": "tiny_qwen25_vl", "builder_args": {},
              "lora": {"r": 4, "alpha": 8}, "options": {"max_length": 256, "video_frames": 4}},
    "data": {"schema": "video_qa"},
    "objective": {"name": "dpo", "params": {"beta": 0.5}},
    "reference": {"strategy": "adapters_off"},
    "train": {"seed": 0, "batch_size": BATCH, "lr": 1e-2, "max_steps": STEPS, "max_grad_norm": 1.0,
              "shuffle": True, "first_step_checks": False},
    "eval": {"every": 0},
    "logging": {"every": 1, "tensorboard": False, "progress": False},
}


def video_recipe(out_dir: Path, data: str, **sections) -> config.Recipe:
    raw = config.merge(BASE, {"data": {"train": data}, "logging": {"output_dir": str(out_dir)}})
    return config.from_dict(config.merge(raw, sections), source=f"<{Path(out_dir).name}>")


@pytest.mark.parametrize("arm, per_pair_per_step, before", [("lora", 1, 0), ("lora_cached", 0, PAIRS), ("full", 2, 0)])
def test_vision_tower_runs_per_pair_per_step(arm, per_pair_per_step, before, tmp_path, clips_encoded):
    data = write_video_rows(tmp_path / "data", PAIRS)
    sections = {"lora": {}, "full": {"model": {"lora": None}, "reference": {"strategy": "copy"}},
                "lora_cached": {"model": {"options": {"cache_vision_features": True}}}}[arm]
    session = train(video_recipe(tmp_path / arm, data, **sections))
    assert len(session.history) >= STEPS
    assert sum(clips_encoded) == before + per_pair_per_step * BATCH * STEPS


def test_precomputed_reference_on_clips_equals_live(tmp_path):
    """The reference stored before training (adapters off) equals the live adapters-off one on
    the same batches, every value to 1e-6; both runs log the same losses."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    data = write_video_rows(tmp_path / "data", PAIRS)
    live = train(video_recipe(tmp_path / "live", data))
    stored = train(video_recipe(tmp_path / "pre", data,
                                reference={"strategy": "precomputed", "precompute_with": "adapters_off"}))
    assert stored.reference.store is not None
    layers = [m for m in live.policy.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    records = stored.train_records
    for start in range(0, len(records), BATCH):  # the precompute pass's batches
        chunk = records[start:start + BATCH]
        batch = live.modality.collate(chunk)
        with torch.no_grad():
            ref_live = live.modality.surrogate(live.policy, batch, live.modality.draw(batch, 0, None), live.needs)
        ref_stored = stored.reference.store.lookup(stored.modality.collate(chunk), like=ref_live)
        for name in ("chosen", "rejected", "chosen_units", "rejected_units"):
            torch.testing.assert_close(getattr(ref_stored, name), getattr(ref_live, name), atol=1e-6, rtol=0)
    losses = [[h["loss"] for h in s.history if "loss" in h] for s in (live, stored)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


@pytest.mark.slow
def test_two_processes_follow_the_one_process_curve(tmp_path):
    """Two processes of batch 1 each against one process of batch 2 (DDP averages equal shards)."""
    from mmalign.testing import train_two_processes

    data = write_video_rows(tmp_path / "data", PAIRS)
    one = train(video_recipe(tmp_path / "one", data))
    two = train_two_processes(video_recipe(tmp_path / "two", data, train={"batch_size": 1}), tmp_path / "two")
    one_losses = [h["loss"] for h in one.history if "loss" in h]
    two_losses = [row["loss"] for row in two]
    assert len(two_losses) == len(one_losses) == STEPS
    assert two_losses == pytest.approx(one_losses, abs=2e-4)
