"""The built wheel works outside a source checkout.

A non-editable install must find its own files (toy checkpoints, vocabularies, demo data,
bundled recipes) through ``mmalign.assets``, never through paths relative to the checkout.
The test builds the wheel from a copy of the tree, installs it with ``--no-deps`` into a fresh
venv that borrows this venv's dependencies through a ``.pth`` line (site-packages paths added
that way are searched after the venv's own, and their ``.pth`` files, such as the editable
install's finder, are not run), and drives the ``mmalign`` command from an empty folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv*", "runs", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".cache")

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, timeout: int = 300) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv holding the mmalign wheel alone; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         str(source), "-w", str(tmp / "dist")], cwd=tmp)
    wheel = next((tmp / "dist").glob("mmalign-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    purelib = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    (purelib / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-compile", str(wheel)], cwd=tmp)
    return venv / "bin"


def test_the_wheel_imports_from_site_packages(installed, tmp_path):
    where = run([str(installed / "python"), "-c", "import mmalign, mmalign.assets as a; "
                 "print(mmalign.__file__); print(a.root())"], cwd=tmp_path).split()
    venv = installed.parent
    assert all(Path(p).is_relative_to(venv) and "site-packages" in p for p in where), where
    assert not any(Path(p).is_relative_to(ROOT) for p in where)


def test_list_shows_plugins_demos_and_recipes(installed, tmp_path):
    out = run([str(installed / "mmalign"), "list"], cwd=tmp_path)
    for name in ("  image_diffusion", "  vision_language", "  text", "  diffusion_red",
                 "  lvlm_hallucination", "  demo_text_dpo", "  sdxl_diffusion_dpo"):
        assert name in out


@pytest.mark.parametrize("task", ["diffusion_red", "lvlm_hallucination"])
def test_quick_demo_runs_each_task(installed, tmp_path, task):
    out = run([str(installed / "mmalign"), "demo", "--quick", "--quiet", "--task", task, "--out", "demo"],
              cwd=tmp_path)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["quick"] is True and {t["task"] for t in summary["tasks"]} == {task}
    assert "measures nothing" in out or "not a measurement" in out
    assert (tmp_path / "demo" / "report.html").is_file()


def test_a_bundled_recipe_trains_by_name(installed, tmp_path):
    out = run([str(installed / "mmalign"), "train", "demo_text_dpo", "train.max_steps=3", "eval.every=0",
               "logging.output_dir=run"], cwd=tmp_path)
    assert out.startswith("done: 3 steps")
    assert (tmp_path / "run" / "export" / "adapter_model.safetensors").is_file()
