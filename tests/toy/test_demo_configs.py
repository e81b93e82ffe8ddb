"""configs/demo_*.yaml are the demos' own training recipes: same model, data schema,
objective, reference, LoRA and optimisation as the tasks build in code."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmalign import config
from mmalign.toy import task_diffusion, task_flow, task_lvlm, task_video

ROOT = Path(__file__).resolve().parents[2]
CASES = [("demo_diffusion_red.yaml", task_diffusion), ("demo_flow_red.yaml", task_flow),
         ("demo_lvlm_hallucination.yaml", task_lvlm), ("demo_video_temporal.yaml", task_video)]


@pytest.mark.parametrize("name,task", CASES)
def test_yaml_recipe_matches_the_task(name, task, tmp_path):
    shipped = config.load(ROOT / "configs" / name).dump()
    built = task.recipe(tmp_path / "pairs.jsonl", 10_000, tmp_path, task.Settings(), False).dump()
    assert Path(shipped["model"]["path"]).resolve() == Path(built["model"]["path"]).resolve()
    for section, keys in {"model": ("modality", "lora", "options", "dtype"), "data": ("schema",),
                          "objective": None, "reference": ("strategy",),
                          "train": ("batch_size", "lr", "max_steps", "seed", "max_grad_norm")}.items():
        if keys is None:
            assert shipped[section] == built[section]
            continue
        for key in keys:
            assert shipped[section][key] == built[section][key], f"{name}: {section}.{key}"


@pytest.mark.parametrize("name,task", CASES)
def test_yaml_starts_with_the_command_that_runs_it(name, task):
    first = (ROOT / "configs" / name).read_text().splitlines()[0]
    assert first.startswith(f"# mmalign train configs/{name}")
