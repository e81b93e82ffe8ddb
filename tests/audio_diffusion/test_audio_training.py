"""The bundled audio recipes run through the trainer on the tiny models, and a two-process run
follows the one-process loss curve."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmalign import config
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
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe.dump()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "mmalign.cli", "train", str(path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "train"]
    ones = [r for r in single.history if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3] and len(ones) == 3
    for one, two in zip(ones, rows):
        assert two["loss"] == pytest.approx(one["loss"], abs=2e-5)
        assert two["rewards/margins"] == pytest.approx(one["rewards/margins"], abs=2e-5)
