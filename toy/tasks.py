"""The embedded default: demos in which alignment visibly works on a laptop CPU.

Each is a plain function ``run_<name>(run_dir, steps=None, progress=True, preset="full")``
registered in the ``mmalign.demos`` entry-point group. It builds its preference data from the
shipped toy base model's own samples scored by a program, trains with the ordinary trainer,
measures on held-out prompts / scenes and sampling seeds, writes ``before.png`` /
``after.png`` sample grids and the training run under ``run_dir/<task>/``, and returns
``{"task", "metric", "before", "after", "higher_is_better", ...}`` (a list of such dicts when
it measures several metrics). The sequence is :func:`mmalign.toy.task.run`; each task module
supplies its parts.

``preset`` names the settings (:data:`PRESETS`): ``full`` (``mmalign demo --task all``) or
``default`` (``mmalign demo`` with no flag: smaller, still measured on at least 200 held-out
samples per arm). ``steps`` shortens training and the sample counts with it, for tests.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from mmalign.errors import ConfigError
from mmalign.toy import task, task_diffusion, task_flow, task_lvlm

PRESETS = ("default", "full")


@contextmanager
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread. The toy models' operations are too small to gain from more,
    and on a CPU shared with other work extra threads spin against each other: generation
    with the toy LLaVA was measured twenty times slower with two threads than with one while
    another process kept a core busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def settings(module, preset: str):
    """The task module's settings called ``preset``, or a ConfigError listing the presets."""
    if preset not in module.PRESETS:
        raise ConfigError(f"demo task '{module.NAME}' has no preset {preset!r}; it has {', '.join(sorted(module.PRESETS))}")
    return module.PRESETS[preset]


def run_diffusion_red(run_dir: Path, steps: int | None = None, progress: bool = True, preset: str = "full") -> dict:
    """Diffusion-DPO toward "no colour named: draw it red"; the red rate before and after."""
    with one_thread():
        return task.run(task_diffusion, Path(run_dir), settings(task_diffusion, preset), steps, progress)


def run_flow_red(run_dir: Path, steps: int | None = None, progress: bool = True, preset: str = "full") -> dict:
    """Flow-DPO (SD3-class rectified flow) toward "no colour named: draw it red"; the red rate
    before and after."""
    with one_thread():
        return task.run(task_flow, Path(run_dir), settings(task_flow, preset), steps, progress)


def run_lvlm_hallucination(run_dir: Path, steps: int | None = None, progress: bool = True,
                           preset: str = "full") -> list[dict]:
    """DPO on sampled captions judged against the scene; CHAIR_i, CHAIR_s, POPE F1 before and after."""
    with one_thread():
        return task.run(task_lvlm, Path(run_dir), settings(task_lvlm, preset), steps, progress)


TASKS: dict[str, Callable[..., dict | list[dict]]] = {
    "diffusion_red": run_diffusion_red,
    "flow_red": run_flow_red,
    "lvlm_hallucination": run_lvlm_hallucination,
}
