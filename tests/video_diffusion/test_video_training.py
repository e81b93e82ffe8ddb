"""The bundled video-DPO recipes run through the trainer on the tiny random models (their
command's own CPU overrides), VideoDPO's pair weights reach the loss through the core's per-row
weight, and a two-process run follows the one-process loss curve."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from mmalign import config
from mmalign.testing import train_two_processes
from mmalign.train.run import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_OPTIONS = {"wan_video_dpo.yaml": {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 16},
                "cogvideox_video_dpo.yaml": {"height": 32, "width": 32, "num_frames": 9}}
TINY_TRAIN = {"train": {"mixed_precision": "no", "gradient_checkpointing": False, "batch_size": 2, "grad_accum": 1,
                        "max_steps": 3, "save_every": 0, "lr": 1e-3, "warmup_steps": 0},
              "eval": {"every": 0, "prompts": []}, "logging": {"every": 1}}


def tiny_recipe(name: str, data_file: str, out: Path, **sections) -> config.Recipe:
    raw = yaml.safe_load((CONFIGS / name).read_text())
    tiny = config.merge(TINY_TRAIN, {"model": {"lora": {"r": 4, "alpha": 8}, "options": TINY_OPTIONS[name]}})
    raw = config.merge(config.merge(raw, tiny), {"data": {"train": data_file}, "logging": {"output_dir": str(out)}})
    return config.from_dict(config.merge(raw, sections), source=f"<{name}>")


@pytest.mark.parametrize("name, beta, builder", [("wan_video_dpo.yaml", 100, "tiny_wan"),
                                                 ("cogvideox_video_dpo.yaml", 5000, "tiny_cogvideox")])
def test_recipe_opens_with_its_command_and_runs_on_the_tiny_model(name, beta, builder, pairs_file, tmp_path):
    text = (CONFIGS / name).read_text()
    assert text.startswith(f"# mmalign train configs/{name} data.train=")
    body = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for key in ("lr:", "params:", "lora:", "height:", "num_frames:", "guidance_scale:", "batch_size:"):
        line = next(line for line in body if line.strip().startswith(key))  # each says where its value is from
        assert "#" in line and ("[" in line.split("#", 1)[1]), line
    recipe = config.load(CONFIGS / name)
    assert recipe.model.modality == "video_diffusion" and recipe.model.builder == builder
    assert recipe.objective[0].params == {"beta": beta} and recipe.reference.strategy == "adapters_off"
    session = train(tiny_recipe(name, pairs_file, tmp_path / "run"))
    losses = [row["loss"] for row in session.history if "loss" in row]
    assert len(losses) == 3 and losses[0] == pytest.approx(0.6931, abs=1e-3)  # adapters off = policy at step 0
    assert (tmp_path / "run" / "export" / "pytorch_lora_weights.safetensors").is_file()


def test_videodpo_pair_weights_reach_the_loss_through_the_core(pairs_file, tmp_path):
    """With ``videodpo_alpha``, ``data.weight_field: score`` and ``sum_over_batch``, the first
    loss (every row at ln 2, adapters off) is ``mean_i (0.72 / score_i) ** alpha * ln 2``, as
    VideoDPO's ``mean(dupfactor * -log sigmoid(...))``."""
    alpha = 2.0
    recipe = tiny_recipe("wan_video_dpo.yaml", pairs_file, tmp_path / "run",
                         model={"options": {"videodpo_alpha": alpha}},
                         data={"weight_field": "score", "weight_reduction": "sum_over_batch"},
                         train={"batch_size": 4, "max_steps": 1, "shuffle": False})
    session = train(recipe)
    scores = [0.5, 0.6, 0.7, 0.8]  # the example pairs' score column
    weights = [(0.72 / s) ** alpha for s in scores]
    first = next(row["loss"] for row in session.history if "loss" in row)
    assert first == pytest.approx(sum(weights) / 4 * math.log(2), abs=1e-4)


@pytest.mark.slow
def test_two_process_run_follows_the_one_process_curve(pairs_file, tmp_path, one_thread):
    """torchrun, 2 CPU processes (gloo), batch 1 each against batch 2 in one process: DDP
    averages equal shards' gradients, and each row's draw is its own (per-row generators). Both
    run on one thread each. What is left is float32 rounding of the per-clip errors (~1e-7 each,
    a batch of 1 against 2 orders the sums differently) times beta = 100: ~1e-5 on a margin,
    against a curve that moves by 1e-3."""
    steps = 3
    single = train(tiny_recipe("wan_video_dpo.yaml", pairs_file, tmp_path / "single"))
    recipe = tiny_recipe("wan_video_dpo.yaml", pairs_file, tmp_path / "ddp", train={"batch_size": 1, "cpu": True})
    rows = train_two_processes(recipe, tmp_path / "launch")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    ones = [r for r in single.history if "loss" in r]
    curves = [(one["loss"], two["loss"], one["rewards/margins"], two["rewards/margins"])
              for one, two in zip(ones, rows)]
    for one, two in zip(ones, rows):
        assert two["loss"] == pytest.approx(one["loss"], abs=5e-5), curves
        assert two["rewards/margins"] == pytest.approx(one["rewards/margins"], abs=1e-4), curves
    assert abs(ones[-1]["loss"] - ones[0]["loss"]) > 3e-4 and abs(ones[-1]["rewards/margins"]) > 5e-4  # it moves
