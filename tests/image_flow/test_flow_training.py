"""The bundled Flow-DPO recipes run through the trainer on the tiny random models (their
command's own CPU overrides), and a two-process run follows the one-process loss curve."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmalign import config
from mmalign.testing import train_two_processes
from mmalign.train.run import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = {"model": {"lora": {"r": 4, "alpha": 8}, "options": {"resolution": 32, "max_sequence_length": 16}},
        "train": {"mixed_precision": "no", "gradient_checkpointing": False, "batch_size": 2, "max_steps": 3,
                  "save_every": 0, "lr": 1e-3},
        "eval": {"every": 0, "prompts": []}, "logging": {"every": 1}}


def tiny_recipe(name: str, data: str, out: Path, **sections) -> config.Recipe:
    raw = yaml.safe_load((CONFIGS / name).read_text())
    raw = config.merge(config.merge(raw, TINY), {"data": {"train": data}, "logging": {"output_dir": str(out)}})
    return config.from_dict(config.merge(raw, sections), source=f"<{name}>")


@pytest.mark.parametrize("name, beta, builder", [("sd35_flow_dpo.yaml", 100, "tiny_sd3"),
                                                 ("flux_flow_dpo.yaml", 2000, "tiny_flux")])
def test_recipe_opens_with_its_command_and_runs_on_the_tiny_model(name, beta, builder, pickapic_file, tmp_path):
    text = (CONFIGS / name).read_text()
    assert text.startswith(f"# mmalign train configs/{name} data.train=")
    recipe = config.load(CONFIGS / name)
    assert recipe.model.modality == "image_flow" and recipe.model.builder == builder
    assert recipe.objective[0].params == {"beta": beta} and recipe.reference.strategy == "adapters_off"
    session = train(tiny_recipe(name, pickapic_file, tmp_path / "run"))
    losses = [row["loss"] for row in session.history if "loss" in row]
    assert len(losses) == 3 and losses[0] == pytest.approx(0.6931, abs=1e-3)  # adapters off = policy at step 0
    assert {"rewards/margins_min", "rewards/margins_max"} <= set(session.history[0])
    assert (tmp_path / "run" / "export" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow
def test_two_process_run_follows_the_one_process_curve(pickapic_file, tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 1 each against batch 2 in one process: DDP
    averages equal shards' gradients, and each row's draw is its own (per-row generators)."""
    steps = 3
    single = train(tiny_recipe("sd35_flow_dpo.yaml", pickapic_file, tmp_path / "single"))
    recipe = tiny_recipe("sd35_flow_dpo.yaml", pickapic_file, tmp_path / "ddp",
                         train={"batch_size": 1, "cpu": True})
    rows = train_two_processes(recipe, tmp_path / "launch")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    ones = [r for r in single.history if "loss" in r]
    for one, two in zip(ones, rows):
        assert two["loss"] == pytest.approx(one["loss"], abs=2e-5)
        assert two["rewards/margins"] == pytest.approx(one["rewards/margins"], abs=2e-5)
