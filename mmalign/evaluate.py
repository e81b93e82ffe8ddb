"""``mmalign eval``: held-out preference metrics and the recipe's registered evaluators.

An evaluator is registered in ``mmalign.registry.evaluators`` (beside the modality that
knows its data) as ``fn(modality, model, data, *, seed, **options) -> dict[str, float]``,
``data`` being the path in ``eval.data`` and ``options`` the recipe's ``eval.options[name]``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from mmalign import config, registry
from mmalign.config import Recipe
from mmalign.errors import ConfigError
from mmalign.train.logs import MetricsLog


def is_run_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.yaml").is_file()


def run_recipe(run_dir: str | Path, overrides=()) -> Recipe:
    """The recipe a run folder was trained with, checked that the run finished."""
    run_dir = Path(run_dir)
    from mmalign.train.checkpoint import TRAINED

    if not (run_dir / TRAINED).is_file():
        raise ConfigError(f"{run_dir} holds no {TRAINED}: the run has not finished (or predates it); "
                          "resume it with train.resume_from, or evaluate a recipe instead")
    return config.load(run_dir / "config.yaml", overrides)


def which_model(recipe: Recipe) -> str:
    """A line saying what ``mmalign eval RECIPE`` evaluates, and how to evaluate a trained run."""
    from mmalign.train.checkpoint import TRAINED

    base = recipe.model.path or f"mmalign.models {recipe.model.builder}"
    line = f"evaluating the base model {base}, untrained"
    out = Path(recipe.logging.output_dir)
    if (out / TRAINED).is_file():
        line += f"; {out} holds a trained run: `mmalign eval {out}` evaluates its weights"
    return line


def run_eval(recipe: Recipe, trained: str | Path | None = None) -> dict[str, float]:
    """Evaluate the model ``recipe`` builds; with ``trained`` (a finished run's folder), that
    run's trained weights (``trained.safetensors``) loaded into it, results under ``trained/eval``."""
    from mmalign.train import checkpoint, run

    recipe = recipe.model_copy(deep=True)
    out_dir = Path(trained or recipe.logging.output_dir) / "eval"
    recipe.logging.output_dir = str(out_dir)
    recipe.logging.tensorboard = False
    if recipe.data.eval is None:
        recipe.data.eval = recipe.data.train
    session = run.build(recipe, overwrite=True)
    try:
        if trained is not None:
            checkpoint.load_trained(Path(trained), session.policy)
        return _evaluate(session, recipe, out_dir)
    finally:
        if session.lock is not None:
            session.lock.release()


def _evaluate(session, recipe: Recipe, out_dir: Path) -> dict[str, float]:
    from mmalign.train import run

    scorer = session.scorer.to(session.accelerator.device)
    model = session.policy
    if session.reference.model is not None:
        session.reference.model.to(session.accelerator.device)
    results = run.evaluate(session, scorer, MetricsLog(out_dir, enabled=False))
    with torch.no_grad():
        for name in recipe.eval.evaluators:
            fn = registry.evaluators.get(name)
            data = recipe.eval.data or recipe.data.eval
            scores = fn(session.modality, model, data, seed=recipe.train.seed,
                        **recipe.eval.options.get(name, {}))
            results.update({f"{name}/{k}": v for k, v in scores.items()})
    (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
    return results
