"""A run that goes wrong says so: non-finite steps stop (or skip, or checkpoint and stop),
one run per folder, SIGTERM keeps a checkpoint, a refused resume leaves the folder alone,
float16 on a CPU is refused, and ``mmalign eval RUN_DIR`` evaluates the trained model."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from mmalign import config
from mmalign.cli import main
from mmalign.errors import ConfigError
from mmalign.objectives import get
from mmalign.objectives.spec import objective
from mmalign.train import checkpoint
from mmalign.train.guard import TrainingStopped
from mmalign.train.run import train
from mmalign.train.rundir import RunLock

ROOT = Path(__file__).resolve().parents[2]


@objective("nan_at_steps", citation="a test objective: DPO whose loss is NaN at the named steps")
def nan_at_steps(policy, reference, ctx=None, *, beta: float = 0.5, steps: tuple = (), rank: int = -1):
    """DPO, its loss multiplied by NaN at optimiser steps ``steps`` (0-based) on process
    ``rank`` (-1: every process), so the guard has a fault to find."""
    out = get("dpo")(policy, reference, beta=beta)
    here = rank < 0 or (torch.distributed.is_initialized() and torch.distributed.get_rank() == rank)
    if ctx is not None and ctx.training and ctx.step in steps and here:
        out.loss = out.loss * float("nan")
    return out


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def nan_recipe(make_recipe, action: str, **train):
    return make_recipe(objective={"name": "nan_at_steps", "params": {"steps": [2]}},
                       train={"max_steps": 5, "on_nonfinite": action, **train})


def test_a_nan_step_stops_the_run_and_names_step_and_rows(make_recipe, caplog):
    recipe = nan_recipe(make_recipe, "stop")
    with caplog.at_level(logging.ERROR, logger="mmalign"), pytest.raises(TrainingStopped) as stop:
        train(recipe)
    assert "step 3: non-finite" in str(stop.value) and "train.on_nonfinite=stop" in str(stop.value)
    assert "train.jsonl:" in caplog.text  # the sample ids of the batch
    run_dir = Path(recipe.logging.output_dir)
    last = rows(run_dir)[-1]
    assert last["step"] == 3 and math.isnan(last["loss"])  # written as NaN, never dropped
    assert not (run_dir / "export").exists()
    RunLock(run_dir).release()  # the stopped run let go of its folder


def test_skip_drops_the_update_and_goes_on(make_recipe):
    recipe = nan_recipe(make_recipe, "skip", max_grad_norm=None)
    session = train(recipe)
    assert session.step == 5
    history = {r["step"]: r for r in session.history}
    assert history[3]["skipped"] == 1.0 and "skipped" not in history[4]
    assert all(math.isfinite(v) for k, v in history[5].items())
    # the skipped step changed nothing: its parameters were never updated by NaN
    assert all(torch.isfinite(p).all() for p in session.policy.parameters())


def test_checkpoint_and_stop_keeps_the_last_good_state(make_recipe):
    recipe = nan_recipe(make_recipe, "checkpoint-and-stop")
    with pytest.raises(TrainingStopped, match="the last good state is in .*step-0000002"):
        train(recipe)
    ckpt = Path(recipe.logging.output_dir) / "checkpoints" / "step-0000002"
    state = checkpoint.read_state(ckpt)
    assert state["scheduler"]["last_epoch"] == 2
    weights = checkpoint._read_tensors(ckpt / "policy.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_the_cli_exits_1_with_the_reason_on_its_last_line(make_recipe, tmp_path, capsys):
    path = tmp_path / "nan.yaml"
    recipe = make_recipe("cli", train={"max_steps": 3, "lr": 1e12}, model={"lora": None},
                         reference={"strategy": "copy"})
    path.write_text(yaml.safe_dump(recipe.dump()))
    assert main(["train", str(path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mmalign train: error: training stopped: step ") and "non-finite" in last


def test_float16_on_a_cpu_is_refused(make_recipe):
    with pytest.raises(ConfigError, match="float16 on a CPU"):
        train(make_recipe(model={"dtype": "float16"}, train={"cpu": True}))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(make_recipe(train={"mixed_precision": "fp16", "cpu": True}))


def test_a_second_run_in_the_same_folder_is_refused_with_the_first_ones_pid(make_recipe):
    recipe = make_recipe(train={"max_steps": 1})
    held = RunLock(Path(recipe.logging.output_dir))
    try:
        with pytest.raises(ConfigError, match=rf"is in use by another run \(pid {os.getpid()} on host "):
            train(recipe)
    finally:
        held.release()
    assert train(recipe).step == 1  # released: the folder is free again


def test_a_refused_resume_leaves_config_yaml_as_it_was(make_recipe):
    first = train(make_recipe(train={"max_steps": 2, "save_every": 2}))
    before = (first.run_dir / "config.yaml").read_text()
    other = make_recipe(train={"max_steps": 4, "lr": 0.5, "resume_from": str(first.run_dir)})
    with pytest.raises(ConfigError, match="another recipe"):
        train(other)
    assert (first.run_dir / "config.yaml").read_text() == before


def test_eval_of_a_run_folder_evaluates_the_trained_model(make_recipe, capsys):
    recipe = make_recipe(train={"max_steps": 12})
    session = train(recipe)
    run_dir = str(session.run_dir)
    assert main(["eval", run_dir]) == 0
    trained = json.loads((session.run_dir / "eval" / "eval.json").read_text())
    # the trained model separates the held-out pairs; the base model is at DPO's log 2
    assert trained["eval/loss"] < math.log(2) - 0.05
    capsys.readouterr()
    recipe_file = session.run_dir / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.dump()))
    assert main(["eval", str(recipe_file)]) == 0
    out = capsys.readouterr().out
    assert "evaluating the base model" in out and f"`mmalign eval {run_dir}`" in out
    assert "eval/loss: 0.6931" in out


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(make_recipe, tmp_path):
    recipe = make_recipe("term", train={"max_steps": 100000, "save_every": 1000})
    path = tmp_path / "term.yaml"
    path.write_text(yaml.safe_dump(recipe.dump()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmalign.cli", "train", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = Path(recipe.logging.output_dir) / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "training stopped by SIGTERM at step" in last and "train.resume_from=" in last
    step = int(last.split("at step ")[1].split(";")[0])
    assert (Path(recipe.logging.output_dir) / "checkpoints" / f"step-{step:07d}").is_dir()


@pytest.mark.slow
def test_two_processes_decide_together_when_one_sees_nan(make_recipe, tmp_path):
    """NaN on process 1 alone: under ``skip`` both processes skip the same step and finish
    (a skip on one process alone would hang DDP at its next all-reduce); under ``stop`` both
    stop, with exit 1."""
    script = tmp_path / "run_nan.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_guard_and_run_dir  # registers nan_at_steps
        from mmalign.cli import main
        sys.exit(main(sys.argv[1:]))
    """))
    # two CPU processes (gloo), also on a machine with a GPU
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    for action, code in (("skip", 0), ("stop", 1)):
        recipe = make_recipe(f"ddp_{action}", objective={"name": "nan_at_steps", "params": {"steps": [1], "rank": 1}},
                             train={"max_steps": 3, "batch_size": 4, "cpu": True, "on_nonfinite": action})
        path = tmp_path / f"{action}.yaml"
        path.write_text(yaml.safe_dump(recipe.dump()))
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               "2", str(script), "train", str(path)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == code, proc.stderr[-3000:]
        logged = rows(Path(recipe.logging.output_dir))
        if action == "skip":
            assert [r["step"] for r in logged] == [1, 2, 3] and logged[1]["skipped"] == 1.0
            assert math.isnan(logged[1]["loss"]) and math.isfinite(logged[2]["loss"])
        else:
            assert [r["step"] for r in logged] == [1, 2] and "step 2: non-finite" in proc.stderr
