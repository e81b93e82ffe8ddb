"""The bundled Qwen2.5-VL recipes (configs/qwen25vl_image_dpo.yaml, configs/qwen25vl_video_dpo.yaml):
each parses, its ``model.options`` pass the modality's own check, its LoRA pattern adapts every
linear layer of the language model and nothing of the vision tower, its pixel budget means the
tokens its header says, and each trains on the tiny stand-in with the overrides its header
gives: the first loss is log 2 (policy = adapters-off reference), a peft adapter of the
language model whose every LoRA B (zero at the start) has moved is exported, and the video
recipe's feature cache runs the vision tower once per clip before training and never in a step."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

pytest.importorskip("decord")
pytest.importorskip("av")

from safetensors.torch import load_file  # noqa: E402

from mmalign import config  # noqa: E402
from mmalign.models.qwen_vl import tiny_qwen25_vl  # noqa: E402
from mmalign.train.run import build_modality, train  # noqa: E402

from tests.video.clip_rows import write_image_rows, write_video_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: recipe -> (data writer, rows it writes)
RECIPES = {"qwen25vl_image_dpo.yaml": (write_image_rows, 4), "qwen25vl_video_dpo.yaml": (write_video_rows, 4)}
#: Qwen2.5-VL's pixels per language-model token of one image or temporal patch (28 x 28)
PIXELS_PER_TOKEN = 28 * 28
#: the tiny stand-in, as each recipe's header says (pixel budget and frames of the tiny processor)
TINY = ["model.path=null", "model.builder=tiny_qwen25_vl", "model.dtype=float32", "train.mixed_precision='no'",
        "model.options.pixel_budget=[1024,4096]", "model.options.video_frames=4", "model.options.max_length=256",
        "train.batch_size=2", "train.grad_accum=1", "train.max_steps=2", "train.warmup_steps=0", "train.save_every=0",
        "logging.tensorboard=false", "logging.progress=false", "logging.every=1"]


def load(name: str, overrides=()) -> config.Recipe:
    return config.load(ROOT / "configs" / name, list(overrides))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_is_for_a_real_checkpoint_and_its_options_validate(name):
    recipe = load(name)
    assert recipe.model.path and recipe.model.builder is None and recipe.model.dtype == "bfloat16"
    assert recipe.reference.strategy == "adapters_off" and recipe.objective[0].params == {"beta": 0.1}
    assert recipe.train.gradient_checkpointing and recipe.train.mixed_precision == "bf16"
    first_line = (ROOT / "configs" / name).read_text().splitlines()[0]
    assert first_line.startswith(f"# mmalign train configs/{name} model.path=")
    options = build_modality(recipe).options  # the modality's own check of model.options
    assert options.packed
    if name == "qwen25vl_image_dpo.yaml":
        assert [b / PIXELS_PER_TOKEN for b in options.pixel_budget] == [256, 1280]
        assert recipe.data.schema_ == "rlaif_v"
    else:
        assert options.cache_vision_features and options.video_frames == 16 and options.video_fps is None
        assert options.pixel_budget[1] / PIXELS_PER_TOKEN == 256  # tokens per 2 frames, at most
        assert options.video_frames // 2 * 256 + 100 < options.max_length  # a whole clip, question and answers
        assert recipe.data.schema_ == "video_qa"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_lora_pattern_adapts_the_language_model_only(name):
    """Every q/k/v/o and MLP projection of the decoder, no module of the vision tower or merger
    (Qwen2.5-VL's ViT blocks have gate_proj / up_proj / down_proj too)."""
    pattern = load(name).model.lora.target_modules
    names = [n for n, _ in tiny_qwen25_vl().named_modules()]
    matched = [n for n in names if re.fullmatch(pattern, n)]
    layers = len(tiny_qwen25_vl().model.language_model.layers)
    assert len(matched) == 7 * layers
    assert all(".language_model." in n for n in matched)
    assert any(re.search(r"visual\..*mlp\.gate_proj$", n) for n in names)  # the tower has such names


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_trains_on_the_tiny_stand_in(name, tmp_path, clips_encoded):
    write, rows = RECIPES[name]
    recipe = load(name, [*TINY, f"data.train={write(tmp_path / 'data')}", f"logging.output_dir={tmp_path / 'run'}",
                         "train.first_step_checks=false"])
    session = train(recipe)
    losses = [h["loss"] for h in session.history if "loss" in h]
    assert len(losses) == 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
    export = tmp_path / "run" / "export"
    assert (export / "adapter_config.json").is_file()
    weights = load_file(str(export / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert len(lora_b) == 7 * 2 and all(".language_model." in k for k in weights)
    assert all(float(v.abs().max()) > 0 for v in lora_b)  # zero at the start: the updates reached every adapter
    if name == "qwen25vl_video_dpo.yaml":  # the cache: every clip once, in prepare; none in the steps
        assert sum(clips_encoded) == rows and len(clips_encoded) == rows
    else:  # live features, packed: each image once per step, shared with the reference
        assert sum(clips_encoded) == 2 * 2
