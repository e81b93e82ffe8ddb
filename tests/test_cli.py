"""The ``mmalign`` command: help everywhere, listing, and its exit codes (0, 2, 1)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmalign.cli import main

ROOT = Path(__file__).resolve().parents[1]


def recipe_file(tmp_path, **changes) -> Path:
    raw = yaml.safe_load((ROOT / "configs/demo_text_dpo.yaml").read_text())
    raw["data"] = {"train": str(ROOT / "assets/text_prefs/train.jsonl"),
                   "eval": str(ROOT / "assets/text_prefs/eval.jsonl"), "schema": "preference"}
    raw["model"]["builder_args"] = {"hidden_size": 16, "layers": 1, "heads": 2}
    raw["train"]["max_steps"] = 2
    raw["logging"] = {"output_dir": str(tmp_path / "run"), "tensorboard": False, "progress": False}
    for key, value in changes.items():
        raw[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["train", "--help"],
                                  ["eval", "--help"], ["plot", "--help"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage: mmalign" in capsys.readouterr().out


def test_list_shows_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading in ("modalities:", "objectives:", "rewards:", "datasets:", "evaluators:", "configs:"):
        assert heading in out
    for name in ("  text", "  dpo", "  kto", "  text:preference", "  demo_text_dpo\n"):
        assert name in out


def test_train_done_is_exit_0_and_plot_writes_png(tmp_path, capsys):
    assert main(["train", str(recipe_file(tmp_path)), "train.lr=1e-3"]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "curves.png").is_file()


def test_bad_recipe_is_exit_2_with_the_message(tmp_path, capsys):
    path = recipe_file(tmp_path)
    assert main(["train", str(path), "train.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmalign train: error: {path}: unknown key 'train.lrr'. Did you mean 'lr'?")


def test_bad_data_is_exit_2_naming_file_and_row(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n')
    path = recipe_file(tmp_path, data={"train": str(bad), "schema": "preference"})
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    # rows count from 0, as datasets indexes them: the second line is row 1
    assert f"{bad}, row 1, field 'rejected': is missing" in err
    assert "(this row has: chosen, prompt)" in err


def test_failure_is_exit_1(tmp_path, capsys, monkeypatch):
    import mmalign.train.run as run

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run, "train", broken)
    assert main(["train", str(recipe_file(tmp_path))]) == 1
    assert "failed: RuntimeError: disk on fire" in capsys.readouterr().err


def test_eval_prints_held_out_metrics(tmp_path, capsys):
    assert main(["eval", str(recipe_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "eval/loss: 0.6931" in out  # an untrained LoRA policy equals its reference


def test_console_script_is_installed():
    exe = shutil.which("mmalign", path=str(Path(sys.executable).parent))
    assert exe, "pip install puts the mmalign command beside the interpreter"
    proc = subprocess.run([exe, "list", "objectives"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "  dpo" in proc.stdout


def test_list_shows_healthy_plugins_and_names_broken_ones(install_dist, capsys):
    """A plugin that fails to import, and one whose name clashes with a built-in, are listed as
    broken with their errors; the others are all listed, and the exit code is 0."""
    install_dist("broken-plugin", {"mmalign.modalities": {"broken": "broken_modality:Thing"}},
                 {"broken_modality": "import mmalign_missing_dependency\nThing = 1\n"})
    install_dist("clash-plugin", {"mmalign.objectives": {"dpo": "clash_objective:dpo"}},
                 {"clash_objective": "def dpo(policy, reference):\n    return None\n"})
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("  text\n", "  vision_language\n", "  image_diffusion\n", "  dpo\n", "  kto\n"):
        assert name in out
    assert ("broken: cannot load modality plugin entry point 'broken = broken_modality:Thing' of package "
            "broken-plugin: ModuleNotFoundError") in out
    assert "broken: objective 'dpo' is registered twice" in out


def test_check_plugin_passes_for_the_example_plugin_and_fails_with_the_reason(install_dist, capsys):
    import tomllib

    plugin = Path(__file__).parent / "plugins" / "mmalign_toy_plugin"
    project = tomllib.loads((plugin / "pyproject.toml").read_text())["project"]
    install_dist(project["name"], project["entry-points"], source=plugin)
    assert main(["check-plugin", "toy"]) == 0
    out = capsys.readouterr().out
    assert "pass  step0" in out and "pass  export" in out and "toy: all 9 checks pass" in out

    install_dist("detached-plugin", {"mmalign.modalities": {"detached": "detached_modality:Detached"}},
                 {"detached_modality": "from mmalign_toy_plugin import ToyModality\n"
                                       "class Detached(ToyModality):\n"
                                       "    def surrogate(self, model, batch, draw, needs):\n"
                                       "        return super().surrogate(model, batch, draw, needs).detach()\n"})
    assert main(["check-plugin", "detached"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  gradient: the surrogate carries no gradient" in out
    assert "detached: FAILED gradient" in out
