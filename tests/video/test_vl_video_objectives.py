"""Video-LLM objectives through the trainer on clips: RRPO (sub-sequence rewards over the
answers' token diff, token-wise KL to the live reference) and mDPO with a perturbed clip as
its corrupted condition; both lower their loss in a few steps on the tiny Qwen2.5-VL."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign import config  # noqa: E402
from mmalign.train.run import train  # noqa: E402

from tests.video.clip_rows import write_video_rows  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def run(tmp_path: Path, data: str, objective: dict, options: dict | None = None):
    recipe = config.from_dict({
        "model": {"modality": "vision_language", "builder": "tiny_qwen25_vl", "lora": {"r": 4, "alpha": 8},
                  "options": {"max_length": 256, "video_frames": 4, **(options or {})}},
        "data": {"train": data, "schema": "video_qa"},
        "objective": objective,
        "reference": {"strategy": "adapters_off"},
        "train": {"seed": 0, "batch_size": 4, "lr": 2e-2, "max_steps": 4},
        "eval": {"every": 0},
        "logging": {"output_dir": str(tmp_path / "run"), "every": 1, "tensorboard": False, "progress": False},
    }, source="<video objective>")
    session = train(recipe)
    return [h for h in session.history if "loss" in h]


def test_rrpo_trains_on_clips(tmp_path):
    steps = run(tmp_path, write_video_rows(tmp_path / "data", 4), {"name": "rrpo", "params": {"beta": 0.5, "alpha": 0.01}})
    assert len(steps) == 4 and steps[-1]["loss"] < steps[0]["loss"]
    assert steps[0]["rrpo/changed_chosen"] > 0  # the answers differ, so there are sub-sequences


def test_mdpo_with_a_shuffled_clip_trains(tmp_path):
    rows = write_video_rows(tmp_path / "data", 4)
    lines = [json.loads(line) for line in Path(rows).read_text().splitlines()]
    Path(rows).write_text("".join(json.dumps({k: v for k, v in row.items() if k != "rejected_video"}) + "\n"
                                  for row in lines))  # no given clip: the row's own clip, shuffled
    steps = run(tmp_path, rows, {"name": "mdpo", "params": {"beta": 0.5}}, {"video_corruption": "shuffle"})
    assert len(steps) == 4 and steps[-1]["loss"] < steps[0]["loss"]
