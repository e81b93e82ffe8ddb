"""The two demos end to end: at their smallest setting, and the claims of ``mmalign demo``.

A few training steps on a few samples cannot move a rate measured on a dozen held-out
samples reliably, so the smallest-setting tests check what is reliable at that size: the
result is well formed, the preference pairs agree with the program reward, and the grids and
the training run (metrics and export) are written. The claims (at least 200 held-out samples
per arm) are checked on the default set that ``mmalign demo`` runs and on the diffusion
task's full settings (``mmalign demo --task all``).
"""
from __future__ import annotations

import json
import math

import pytest

from mmalign.toy import checkpoints, task_diffusion, task_flow, task_lvlm, tasks

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not checkpoints.HASHES.is_file(), reason="assets/toy checkpoints are not shipped")]


@pytest.fixture(autouse=True)
def _offline_one_thread(offline_one_thread):
    """Every test here: offline, one thread (tests/toy/conftest.py)."""


def check_result(result: dict, task: str) -> None:
    assert set(result) >= {"task", "metric", "before", "after", "higher_is_better"}
    assert result["task"] == task and isinstance(result["metric"], str)
    assert isinstance(result["higher_is_better"], bool)
    for key in ("before", "after"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and 0.0 <= result[key] <= 1.0


def train_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_diffusion_red_smallest(tmp_path):
    result = tasks.TASKS["diffusion_red"](tmp_path, steps=4, progress=False)
    check_result(result, "diffusion_red")
    out = tmp_path / "diffusion_red"
    assert (out / "before.png").is_file() and (out / "after.png").is_file()
    assert (out / "train" / "export" / "pytorch_lora_weights.safetensors").is_file()  # diffusers LoRA format
    assert result["pairs"] > 0
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    from PIL import Image

    from mmalign.toy.rewards import ColourPreference

    scorer = ColourPreference()
    for pair in pairs:
        won, lost = (Image.open(out / pair[k]) for k in ("chosen", "rejected"))
        scores = scorer.score([won, lost], [pair["prompt"]] * 2)
        assert scores[0] > scores[1]
    assert train_metrics(tmp_path / "diffusion_red" / "train")


def test_lvlm_hallucination_smallest(tmp_path):
    results = tasks.TASKS["lvlm_hallucination"](tmp_path, steps=4, progress=False)
    assert [r["metric"] for r in results] == ["CHAIR_i", "CHAIR_s", "POPE_F1", "coverage"]
    for result in results:
        check_result(result, "lvlm_hallucination")
    assert [r["higher_is_better"] for r in results] == [False, False, True, True]
    out = tmp_path / "lvlm_hallucination"
    assert (out / "before.png").is_file() and (out / "after.png").is_file()
    assert (out / "train" / "export" / "README.md").is_file()
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)


def check_lvlm_claims(results: dict) -> None:
    """CHAIR_i falls by at least a third, CHAIR_s falls, POPE F1 does not drop."""
    assert results["CHAIR_i"]["after"] <= results["CHAIR_i"]["before"] * (2 / 3)
    assert results["CHAIR_s"]["after"] < results["CHAIR_s"]["before"]
    assert results["POPE_F1"]["after"] >= results["POPE_F1"]["before"]


def test_default_set_makes_its_claims_on_held_out_seeds(tmp_path, capsys):
    """``mmalign demo`` with no flag: every task at its default preset, measured on held-out
    prompts / scenes and seeds with at least 200 samples per arm. The red rate rises by at
    least 20 points for the diffusion and the flow model (measured here: 0.396 to 0.642 and
    0.312 to 0.875); the LVLM's CHAIR_i falls by a third,
    CHAIR_s falls, POPE F1 holds. summary.json is well formed and the report is written.
    About 7 minutes on a 2-core machine."""
    from mmalign.cli import main

    for module in (task_diffusion, task_flow, task_lvlm):
        assert module.PRESETS["default"].eval_images >= 200
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"tasks", "quick", "preset"}
    assert summary["quick"] is False and summary["preset"] == "default"
    assert {r["task"] for r in summary["tasks"]} == {"diffusion_red", "flow_red", "lvlm_hallucination"}
    for result in summary["tasks"]:
        assert set(result) == {"task", "metric", "before", "after", "higher_is_better"}
        check_result(result, result["task"])
    for name in ("diffusion_red", "flow_red"):
        (red,) = [r for r in summary["tasks"] if r["task"] == name]
        assert red["after"] - red["before"] >= 0.20, name
    check_lvlm_claims({r["metric"]: r for r in summary["tasks"] if r["task"] == "lvlm_hallucination"})
    printed = capsys.readouterr().out
    assert "CHAIR_i" in printed and "--task all" in printed
    assert (tmp_path / "report.html").is_file()


def test_diffusion_red_full_size_raises_the_red_rate_by_15_points(tmp_path):
    """``mmalign demo --task diffusion_red`` at its full settings (those of ``--task all``): on
    held-out prompts and seeds, 240 images per arm, the red rate rises by at least 15 points
    (measured here: 0.396 to 0.600; about 6.5 minutes). The LVLM task's full settings are its
    default ones, checked above."""
    from mmalign.cli import main

    assert task_lvlm.PRESETS["full"] == task_lvlm.PRESETS["default"]
    assert main(["demo", "--task", "diffusion_red", "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "full"
    (result,) = summary["tasks"]
    check_result(result, "diffusion_red")
    assert result["higher_is_better"] is True
    assert result["after"] - result["before"] >= 0.15
