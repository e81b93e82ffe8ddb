"""The demo skeleton (mmalign.toy.task) and how ``mmalign demo`` picks tasks and presets."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from mmalign.demo import plan
from mmalign.errors import ConfigError, DataError
from mmalign.toy import task, task_diffusion, task_lvlm, tasks


class Echo:
    """A modality whose samples name what made them: (prompt, seed, index), so a test sees
    which seed each prompt got and how calls were chunked."""

    def __init__(self):
        self.calls: list[int] = []

    def sample(self, model, prompts, n, seeds, init=None, strength=None):
        assert len(seeds) == len(prompts)
        self.calls.append(len(prompts))
        return [[(p, s, j) for j in range(n)] for p, s in zip(prompts, seeds)]


@pytest.mark.parametrize("chunk", [1, 3, 8, 100])
def test_sample_all_gives_prompt_i_seed_i_whatever_the_chunk(chunk):
    modality = Echo()
    prompts, seeds = [f"p{i}" for i in range(7)], [100 + 3 * i for i in range(7)]
    got = task.sample_all(modality, None, prompts, 2, seeds, chunk, "test", progress=False)
    assert got == [[(f"p{i}", 100 + 3 * i, 0), (f"p{i}", 100 + 3 * i, 1)] for i in range(7)]
    per_call = max(1, chunk // 2)  # chunk counts samples, n = 2 of them per prompt
    assert modality.calls == [min(per_call, 7 - start) for start in range(0, 7, per_call)]


@dataclass(frozen=True)
class Knobs:
    steps: int = 100
    pair_prompts: int = 200
    eval_images: int = 240
    lr: float = 1e-3


def test_shortened_scales_the_named_counts_down_to_their_floors():
    s = task.shortened(Knobs(), 10, ("pair_prompts", "eval_images"))
    assert (s.steps, s.pair_prompts, s.eval_images, s.lr) == (10, 20, 24, 1e-3)
    s = task.shortened(Knobs(), 1, ("pair_prompts", "eval_images"))
    assert (s.pair_prompts, s.eval_images) == (4, 8)  # 2 and 2.4 rounded, held at the floors
    assert task.shortened(Knobs(), 300, ("pair_prompts",)) == Knobs(steps=300)  # more steps: counts kept


def test_write_pairs_refuses_an_empty_table(tmp_path):
    table, count = task.write_pairs(tmp_path, [{"prompt": "a", "chosen": "w.png", "rejected": "l.png"}])
    assert count == 1 and table.read_text() == '{"prompt": "a", "chosen": "w.png", "rejected": "l.png"}\n'
    with pytest.raises(DataError, match="no preference pair"):
        task.write_pairs(tmp_path, [])


@pytest.mark.parametrize("module", [task_diffusion, task_lvlm])
def test_task_modules_supply_every_part(module):
    for name in ("NAME", "SCALED", "load", "measure", "make_pairs", "recipe", "grid", "results"):
        assert hasattr(module, name), f"{module.__name__} lacks {name}"
    for field in module.SCALED:
        assert hasattr(module.Settings(), field)
    assert set(module.PRESETS) == set(tasks.PRESETS)
    assert module.PRESETS["full"] == module.Settings()
    assert module.PRESETS["default"].eval_images >= 200  # a claim needs 200 held-out samples per arm


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="no preset 'fast'.*default, full"):
        tasks.settings(task_diffusion, "fast")


def test_plan_picks_tasks_and_presets():
    every = ["diffusion_red", "flow_red", "lvlm_hallucination"]
    assert plan(None) == (every, "default")
    assert plan([]) == (every, "default")
    assert plan(["all"]) == (every, "full")
    assert plan(["lvlm_hallucination", "lvlm_hallucination"]) == (["lvlm_hallucination"], "full")
    with pytest.raises(ConfigError, match="diffusion_red"):
        plan(["diffusion_rde"])
