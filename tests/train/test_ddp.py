"""Two CPU processes (gloo) under torchrun give the same curve as one process with the
same global batch: DDP averages the per-process gradients of equal-sized shards."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from mmalign.train.run import train


def metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if json.loads(line)["split"] == "train"]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(make_recipe, tmp_path):
    steps = 4
    single = train(make_recipe("single", train={"max_steps": steps, "batch_size": 8}))
    recipe = make_recipe("ddp", train={"max_steps": steps, "batch_size": 4, "cpu": True})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe.dump()))
    # two CPU processes (gloo), also on a machine with a GPU
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "mmalign.cli", "train", str(path)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_rows = metrics(tmp_path / "ddp")
    assert [r["step"] for r in ddp_rows] == list(range(1, steps + 1))
    for one, two in zip(single.history, ddp_rows):
        assert two["loss"] == pytest.approx(one["loss"], abs=2e-5)
        assert two["rewards/margins"] == pytest.approx(one["rewards/margins"], abs=2e-5)
    assert (tmp_path / "ddp" / "export").is_dir()
