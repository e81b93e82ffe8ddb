"""The bundled audio recipes run through the trainer on the tiny models, and a two-process run
follows the one-process loss curve."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmalign import config
from mmalign.testing import train_two_processes
from mmalign.train.run import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = {"train": {"mixed_precision": "no", "gradient_checkpointing": False, "batch_size": 2, "max_steps": 3,
                  "save_every": 0, "lr": 1e-3},
        "eval": {"every": 0, "prompts": []}, "logging": {"every": 1}}
OPTIONS = {"ace_step_dpo.yaml": {"seconds": 1.0, "min_seconds": 0.5, "caption_dropout": 0.0},
           "tango2_dpo.yaml": {"seconds": 0.5, "min_seconds": 0.25, "max_sequence_length": 16}}


def tiny_recipe(name: str, data: str, out: Path, **sections) -> config.Recipe:
    raw = yaml.safe_load((CONFIGS / name).read_text())
    raw = config.merge(config.merge(raw, TINY), {"model": {"options": OPTIONS[name]}, "data": {"train": data},
                                                 "logging": {"output_dir": str(out)}})
    return config.from_dict(config.merge(raw, sections), source=f"<{name}>")


@pytest.mark.parametrize("name", ["ace_step_dpo.yaml", "tango2_dpo.yaml"])
def test_recipe_runs_on_the_tiny_model(name, pairs_file, tmp_path):
    assert (CONFIGS / name).read_text().startswith(f"# mmalign train configs/{name} data.train=")
    session = train(tiny_recipe(name, pairs_file, tmp_path / "run"))
    losses = [row["loss"] for row in session.history if "loss" in row]
    assert len(losses) == 3 and losses[0] == pytest.approx(0.6931, abs=1e-3)  # adapters off = policy at step 0
    assert (tmp_path / "run" / "export" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow
def test_two_process_run_follows_the_one_process_curve(pairs_file, tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 1 each against batch 2 in one process, on the
    tiny ACE-Step: DDP averages equal shards' gradients and each row's draw is its own."""
    single = train(tiny_recipe("ace_step_dpo.yaml", pairs_file, tmp_path / "single"))
    recipe = tiny_recipe("ace_step_dpo.yaml", pairs_file, tmp_path / "ddp", train={"batch_size": 1, "cpu": True})
    rows = train_two_processes(recipe, tmp_path / "launch")
    ones = [r for r in single.history if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3] and len(ones) == 3
    for one, two in zip(ones, rows):
        assert two["loss"] == pytest.approx(one["loss"], abs=2e-5)
        assert two["rewards/margins"] == pytest.approx(one["rewards/margins"], abs=2e-5)
