"""The sequence every demo task follows, written once.

A demo (:mod:`~mmalign.toy.task_diffusion`, :mod:`~mmalign.toy.task_lvlm`) is a module that
supplies its parts as plain functions (:class:`Parts`); :func:`run` strings them together:

1. load the shipped toy base model through its modality;
2. measure it on held-out prompts / scenes and sampling seeds (``split``);
3. sample it on the ``prefs`` seeds, score each sample with a program reward and keep the best
   and the worst of each prompt as a preference pair (:func:`~mmalign.toy.rewards.best_vs_worst`);
   write them as ``pairs.jsonl``;
4. train on the pairs with the ordinary trainer (:func:`mmalign.train.run.train`);
5. measure the trained policy exactly as in 2, with the same prompts and seeds;
6. write ``before.png`` / ``after.png`` and return the result dicts ``mmalign demo`` collects.

Sampling goes through the modality's ``sample(model, prompts, n, seeds)`` hook, one seed per
prompt, so a prompt's samples depend on its seed alone: before and after start from the same
noise, and chunking the calls (:func:`sample_all`) changes speed, never the samples.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from torch import nn
from tqdm.auto import tqdm

from mmalign import config
from mmalign.errors import DataError
from mmalign.train.run import train


class Parts(Protocol):
    """What a demo module supplies. ``s`` is the module's own frozen ``Settings``; a measurement
    is whatever its ``measure`` returns, handed back to its ``grid`` and ``results``."""

    NAME: str
    #: Settings fields (sample counts) that shrink in proportion when ``steps`` shortens training
    SCALED: tuple[str, ...]

    def load(self, s: Any) -> tuple[Any, nn.Module]:
        """The modality and the base policy."""

    def measure(self, modality: Any, model: nn.Module, out: Path, split: str, s: Any, progress: bool,
                arm: str) -> Any:
        """The task's metrics of ``model`` on ``split`` prompts and seeds (``arm``: base / aligned)."""

    def make_pairs(self, modality: Any, model: nn.Module, out: Path, s: Any, progress: bool) -> list[dict]:
        """Preference rows (the training schema's columns) from the model's scored samples."""

    def recipe(self, table: Path, n_pairs: int, out: Path, s: Any, progress: bool) -> config.Recipe:
        """The training recipe (see :func:`recipe`)."""

    def grid(self, out: Path, split: str, measured: Any, path: Path) -> None:
        """A PNG of some of the measured samples."""

    def results(self, before: Any, after: Any, common: dict) -> dict | list[dict]:
        """``mmalign demo`` results: ``common`` plus metric, before, after, higher_is_better."""


def run(task: Parts, run_dir: Path, s: Any, steps: int | None = None, progress: bool = True,
        split: str = "heldout") -> dict | list[dict]:
    """Measure, pair, train, measure again (module doc), under ``run_dir/<task.NAME>/``."""
    if steps is not None:
        s = shortened(s, steps, task.SCALED)
    out = Path(run_dir) / task.NAME
    out.mkdir(parents=True, exist_ok=True)
    modality, base = task.load(s)
    before = task.measure(modality, base, out, split, s, progress, "base")
    table, n_pairs = write_pairs(out, task.make_pairs(modality, base, out, s, progress))
    session = train(task.recipe(table, n_pairs, out, s, progress), overwrite=True)
    after = task.measure(session.modality, session.policy, out, split, s, progress, "aligned")
    task.grid(out, split, before, out / "before.png")
    task.grid(out, split, after, out / "after.png")
    common = {"task": task.NAME, "pairs": n_pairs, "split": split, "run_dir": str(out / "train")}
    return task.results(before, after, common)


def shortened(s: Any, steps: int, scaled: Sequence[str]) -> Any:
    """``steps`` training steps; fewer than ``s.steps`` also shrink the ``scaled`` sample counts
    in proportion (down to a handful: 4 pair prompts, 8 measured samples), so tests run a
    whole task in seconds."""
    if steps >= s.steps:
        return replace(s, steps=steps)
    scale = steps / s.steps
    floors = {name: 8 if name.startswith("eval") else 4 for name in scaled}
    return replace(s, steps=steps, **{name: max(floors[name], round(getattr(s, name) * scale)) for name in scaled})


def sample_all(modality: Any, model: nn.Module, prompts: Sequence[Any], n: int, seeds: Sequence[int], chunk: int,
               desc: str, progress: bool) -> list[list[Any]]:
    """``n`` samples of each prompt (prompt-major, one list per prompt) from the modality's
    ``sample`` hook, prompt ``i`` from ``seeds[i]``, in calls of about ``chunk`` samples."""
    per_call = max(1, chunk // n)
    out: list[list[Any]] = []
    with tqdm(total=len(prompts) * n, desc=desc, disable=not progress) as bar:
        for start in range(0, len(prompts), per_call):
            part = list(prompts[start:start + per_call])
            out += modality.sample(model, part, n, list(seeds[start:start + per_call]))
            bar.update(len(part) * n)
    return out


def write_pairs(out: Path, rows: list[dict]) -> tuple[Path, int]:
    """``out/pairs.jsonl`` (paths in it relative to ``out``) and its number of rows."""
    table = out / "pairs.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if not rows:
        raise DataError("every sample of every prompt scored the same, so there is no preference pair",
                        file=str(table), hint="Sample more (a larger Settings.samples_per_*) or check the base model")
    return table, len(rows)


def recipe(task: str, model: dict, data: dict, objective: Any, s: Any, n_pairs: int, out: Path,
           progress: bool) -> config.Recipe:
    """A demo's training recipe: ``model`` / ``data`` / ``objective`` from the task; LoRA with its
    adapters off as the reference; the optimisation knobs from ``s`` (configs/demo_*.yaml
    write the same recipes as YAML)."""
    return config.from_dict({
        "model": model,
        "data": data,
        "objective": objective,
        "reference": {"strategy": "adapters_off" if model.get("lora") else "copy"},
        "train": {"seed": 0, "batch_size": min(s.batch_size, n_pairs), "lr": s.lr, "max_steps": s.steps, "cpu": True,
                  "max_grad_norm": 1.0},
        "logging": {"output_dir": str(out / "train"), "every": 10, "tensorboard": False, "progress": progress},
    }, source=f"<{task} demo>")
