"""The ``video_temporal`` task (not yet one of ``mmalign demo``'s): its shipped base model, its
smallest run, and its claim, which is not yet stable.

The base model (``assets/toy/qwen_video``) must be the one whose hashes are recorded. The
smallest run checks a well-formed result on a handful of clips. The claim: on at least 200
held-out clips, DPO raises direction-question accuracy by at least 15 points, with the change's
95% interval above zero, while caption object accuracy and the answer lengths do not fall (the
guards against shortcuts).
"""
from __future__ import annotations

import math

import pytest

pytest.importorskip("av")
pytest.importorskip("decord")

from mmalign.demo import QUICK_STEPS, _check  # noqa: E402
from mmalign.toy import checkpoints, task, task_video, tasks  # noqa: E402

needs_asset = pytest.mark.skipif(not (checkpoints.ROOT / "qwen_video").is_dir(), reason="assets/toy/qwen_video is not shipped")
pytestmark = needs_asset


@pytest.fixture(autouse=True)
def _offline_one_thread(offline_one_thread):
    """Every test here: offline, one thread (tests/toy/conftest.py)."""


def run(run_dir, steps=None) -> list[dict]:
    """The task through :func:`mmalign.toy.task.run`, as a demo task would run it."""
    with tasks.one_thread():
        return task.run(task_video, run_dir, task_video.PRESETS["default"], steps, False)


def by_metric(rows: list[dict]) -> dict[str, dict]:
    for row in rows:
        _check(row, "video_temporal")
        assert all(math.isfinite(row[k]) for k in ("before", "after"))
    return {row["metric"]: row for row in rows}


def test_task_module_supplies_every_part_and_preset():
    for name in ("NAME", "SCALED", "load", "measure", "make_pairs", "recipe", "grid", "results"):
        assert hasattr(task_video, name), f"task_video lacks {name}"
    assert set(task_video.PRESETS) == set(tasks.PRESETS)
    assert all(p.eval_clips >= 200 for p in task_video.PRESETS.values())  # a claim needs 200 per arm


def test_video_asset_matches_its_recorded_hashes():
    recorded = {name for name in checkpoints.recorded_hashes() if name.startswith("qwen_video/")}
    assert {"qwen_video/config.json", "qwen_video/model.safetensors"} <= recorded
    assert [name for name in checkpoints.mismatches() if name.startswith("qwen_video/")] == []


@pytest.mark.slow
def test_video_temporal_quick_runs_every_step(tmp_path):
    """``mmalign demo --quick``'s size: a few clips, two training steps; measures nothing."""
    rows = by_metric(run(tmp_path, steps=QUICK_STEPS))
    assert {"direction_accuracy", "caption_object_accuracy", "answer_words"} <= set(rows)
    out = tmp_path / "video_temporal"
    assert (out / "before.png").is_file() and (out / "after.png").is_file()
    assert (out / "train" / "export" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.skip(reason="not yet stable: in a fresh process caption object accuracy rose (0.729 to 0.779), "
                  "after another run in the same process it fell (0.729 to 0.708); the direction gain held "
                  "(>= 15 points) in both")
def test_video_temporal_default_preset_raises_held_out_direction_accuracy_by_15_points(tmp_path):
    """The default preset, 240 held-out clips: direction accuracy rises by at least 15 points
    (measured: 0.249 to 0.469, change [+0.162, +0.278]), caption object accuracy does not fall,
    answers keep their length (1.0 word) and captions theirs within 2% (8.20 to 8.17 words)."""
    rows = by_metric(run(tmp_path))
    direction = rows["direction_accuracy"]
    assert direction["split"] == "heldout" and direction["samples"] >= 200
    assert direction["after"] - direction["before"] >= 0.15
    assert direction["change_ci95"][0] > 0
    assert rows["caption_object_accuracy"]["after"] >= rows["caption_object_accuracy"]["before"]
    assert rows["answer_words"]["after"] >= rows["answer_words"]["before"]
    assert rows["caption_words"]["after"] >= 0.98 * rows["caption_words"]["before"]
