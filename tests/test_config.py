"""Malformed recipes: each fails before any model loads, with the exact message a user sees."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mmalign import config
from mmalign.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
model:
  modality: text
  builder: tiny_llama
data:
  train: data.jsonl
objective:
  name: dpo
  params: {beta: 0.1}
"""


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def fails(tmp_path, text: str, *overrides: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path, list(overrides))
    return str(err.value).replace(str(path), "recipe.yaml")


def test_good_recipe_loads_with_defaults_and_shorthand(tmp_path):
    recipe = config.load(write(tmp_path, GOOD), ["train.lr=2e-5", "objective.0.params.beta=0.3"])
    assert recipe.train.lr == 2e-5
    assert recipe.objective[0].name == "dpo"
    assert recipe.objective[0].params == {"beta": 0.3}
    assert recipe.reference.strategy == "auto"


def test_objective_override_shorthand(tmp_path):
    recipe = config.load(write(tmp_path, GOOD), ["objective.beta=0.2", "objective.weight=0.5"])
    assert recipe.objective[0].params == {"beta": 0.2} and recipe.objective[0].weight == 0.5


def test_objective_shorthand_puts_extra_keys_in_params(tmp_path):
    recipe = config.load(write(tmp_path, GOOD.replace("  params: {beta: 0.1}\n", "  beta: 0.2\n")))
    assert recipe.objective[0].params == {"beta": 0.2}


def test_unknown_key_names_section_and_suggests(tmp_path):
    msg = fails(tmp_path, GOOD + "train:\n  lrr: 1.0e-5\n")
    assert msg.startswith("recipe.yaml: unknown key 'train.lrr'. Did you mean 'lr'? Allowed in train: ")
    assert "batch_size" in msg and "max_steps" in msg


def test_unknown_top_level_section(tmp_path):
    msg = fails(tmp_path, GOOD + "optimizer: adamw\n")
    assert msg == ("recipe.yaml: unknown key 'optimizer'. Allowed in the top level: data, eval, "
                   "logging, model, objective, reference, train")


def test_wrong_type(tmp_path):
    msg = fails(tmp_path, GOOD + "train:\n  lr: fast\n")
    assert msg == ("recipe.yaml: train.lr: Input should be a valid number, unable to parse string "
                   "as a number (got 'fast')")


def test_value_outside_choices(tmp_path):
    msg = fails(tmp_path, GOOD + "train:\n  scheduler: cosin\n")
    assert msg == ("recipe.yaml: train.scheduler: Input should be 'constant', 'linear' or 'cosine' "
                   "(got 'cosin')")


def test_value_out_of_range(tmp_path):
    msg = fails(tmp_path, GOOD + "train:\n  batch_size: 0\n")
    assert msg == "recipe.yaml: train.batch_size: Input should be greater than 0 (got 0)"


def test_missing_required_key(tmp_path):
    msg = fails(tmp_path, GOOD.replace("  train: data.jsonl\n", "  eval: x.jsonl\n"))
    assert msg == "recipe.yaml: missing required key 'data.train'"


def test_model_needs_exactly_one_source(tmp_path):
    msg = fails(tmp_path, GOOD.replace("  builder: tiny_llama\n", "  builder: tiny_llama\n  path: /m\n"))
    assert msg == ("recipe.yaml: model: give exactly one of model.path (a local checkpoint folder) "
                   "or model.builder (a tiny model from mmalign.models)")


def test_unknown_objective_suggests(tmp_path):
    msg = fails(tmp_path, GOOD.replace("name: dpo", "name: dpoo"))
    assert msg.startswith("recipe.yaml: objective[0].name: unknown objective 'dpoo'. "
                          "Did you mean 'dpo'? Known objectives: ")


def test_unknown_objective_parameter(tmp_path):
    msg = fails(tmp_path, GOOD.replace("beta: 0.1", "betta: 0.1"))
    assert msg.startswith("recipe.yaml: objective[0] (dpo): objective 'dpo' has no parameter "
                          "'betta'; it takes: beta=0.1, label_smoothing=0.0")


def test_unknown_modality(tmp_path):
    msg = fails(tmp_path, GOOD.replace("modality: text", "modality: txt"))
    assert msg.startswith("recipe.yaml: model.modality: unknown modality 'txt'. "
                          "Did you mean 'text'? Known modalities: ")


def test_reference_none_with_reference_objective(tmp_path):
    msg = fails(tmp_path, GOOD + "reference:\n  strategy: none\n")
    assert msg == ("recipe.yaml: reference.strategy is 'none' but dpo needs a reference model; "
                   "use copy, adapters_off, adapter or precomputed")


def test_adapters_off_needs_lora(tmp_path):
    msg = fails(tmp_path, GOOD + "reference:\n  strategy: adapters_off\n")
    assert msg == ("recipe.yaml: reference.strategy 'adapters_off' needs a LoRA policy; add a "
                   "model.lora section or use reference.strategy=copy")


def test_bad_override(tmp_path):
    msg = fails(tmp_path, GOOD, "train.lr")
    assert msg == "override 'train.lr': write it as key.sub=value (for example train.lr=1e-5)"


def test_not_a_mapping(tmp_path):
    msg = fails(tmp_path, "- just\n- a list\n")
    assert msg == ("recipe.yaml: a recipe is a mapping of sections (model, data, objective, ...); "
                   "got list")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such recipe file"):
        config.load(tmp_path / "nope.yaml")


def test_every_bundled_recipe_validates():
    from mmalign import assets

    recipes = assets.recipes()
    assert {p.name for p in recipes} == {p.name for p in (ROOT / "configs").glob("*.yaml")}
    for path in recipes:
        config.load(path)


def test_a_bundled_recipe_runs_by_name_from_any_directory(tmp_path, monkeypatch):
    """``mmalign train demo_text_dpo`` from a folder with no such file takes the bundled
    recipe, and its ``assets/...`` paths name the shipped files."""
    from mmalign import assets

    monkeypatch.chdir(tmp_path)
    recipe = config.load("demo_text_dpo")
    assert Path(recipe.data.train) == assets.path("text_prefs/train.jsonl")
    assert Path(recipe.data.train).is_file()
    (tmp_path / "assets" / "text_prefs").mkdir(parents=True)  # a file of the user's own wins
    (tmp_path / "assets" / "text_prefs" / "train.jsonl").write_text("{}\n")
    assert config.load("configs/demo_text_dpo.yaml").data.train == "assets/text_prefs/train.jsonl"
    with pytest.raises(ConfigError, match="no bundled recipe of that name"):
        config.load("demo_text_dpx")


def test_yaml_reads_exponent_floats_as_numbers(tmp_path):
    """YAML 1.1 reads ``1e-1`` as a string; a recipe means the number."""
    recipe = config.load(write(tmp_path, GOOD.replace("beta: 0.1", "beta: 1e-1") + "train: {lr: 5e-3}\n"))
    assert recipe.objective[0].params["beta"] == 0.1 and recipe.train.lr == 0.005
    assert config.load(write(tmp_path, GOOD), ["train.lr=2e-4"]).train.lr == 2e-4


def test_a_key_written_twice_is_refused_with_its_lines(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'train' is written twice \(lines 9 and 11\)"):
        config.load(write(tmp_path, GOOD + "train: {lr: 0.1}\nmodel2: {}\ntrain: {lr: 0.2}\n"))


def test_a_negative_objective_weight_needs_saying_so(tmp_path):
    negative = GOOD.replace("  name: dpo\n", "  name: dpo\n  weight: -1\n")
    with pytest.raises(ConfigError, match="objective.0: .*negative weight .*allow_negative_weight"):
        config.load(write(tmp_path, negative))
    allowed = config.load(write(tmp_path, negative.replace("weight: -1", "weight: -1\n  allow_negative_weight: true")))
    assert allowed.objective[0].weight == -1


def test_the_old_skip_bad_rows_key_names_its_successor(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'data.skip_bad_rows'\. It is now data.on_bad_row"):
        config.load(write(tmp_path, GOOD.replace("  train: data.jsonl", "  train: data.jsonl\n  skip_bad_rows: true")))
