"""``mmalign demo``: run the registered demo tasks and write ``summary.json`` and a report.

The tasks themselves (toy worlds, their base models and measurements) are plugins in the
``mmalign.demos`` entry-point group; the core only runs them and collects what they measured.
A task is ``fn(run_dir, steps=None, progress=True, preset="full")``; its presets are

* ``default``: what ``mmalign demo`` runs with no flag, every installed task at settings that
  fit the whole set in minutes on a laptop CPU and still measure a claim on held-out samples
  (at least 200 per arm);
* ``full``: what ``mmalign demo --task all`` (every task) and ``--task NAME`` run.

``--quick`` runs every step of each task on a handful of samples: it checks an install and
measures nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

from mmalign import registry
from mmalign.errors import ConfigError

KEYS = ("task", "metric", "before", "after", "higher_is_better")
#: training steps of ``--quick``: every task shrinks its sample counts with its steps, so the
#: whole pipeline runs in seconds; its numbers measure nothing
QUICK_STEPS = 2
#: ``--task all``: every installed task at its full settings
ALL = "all"


def _check(result: dict, name: str) -> dict:
    missing = [k for k in KEYS if k not in result]
    if missing:
        raise ConfigError(f"demo task '{name}' returned no {', '.join(missing)}; a task returns "
                          f"dicts with keys {', '.join(KEYS)}")
    return {"task": str(result["task"]), "metric": str(result["metric"]),
            "before": float(result["before"]), "after": float(result["after"]),
            "higher_is_better": bool(result["higher_is_better"])}


def plan(tasks: list[str] | None) -> tuple[list[str], str]:
    """The task names to run and their preset: none named -> every installed task, ``default``;
    ``all`` -> every installed task, ``full``; names -> those tasks, ``full``."""
    installed = registry.demos.names()
    if not installed:
        raise ConfigError("no demo tasks are installed (entry-point group mmalign.demos)")
    if not tasks:
        return installed, "default"
    if ALL in tasks:
        return installed, "full"
    for name in tasks:
        registry.demos.get(name)  # an unknown name fails here, with the known ones
    return list(dict.fromkeys(tasks)), "full"


def run_demo(out: str | Path, tasks: list[str] | None = None, steps: int | None = None,
             progress: bool = True, quick: bool = False) -> dict:
    """Run ``tasks`` (see :func:`plan`) under ``out``; ``quick`` runs each end to end in
    seconds, as a check that the install works, and its summary says it makes no claim."""
    out = Path(out)
    steps = QUICK_STEPS if quick else steps
    names, preset = plan(tasks)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        fn = registry.demos.get(name)
        produced = fn(out, steps=steps, progress=progress, preset=preset)  # a task writes under out/<task>/
        for result in produced if isinstance(produced, list) else [produced]:
            results.append(_check(result, name))
    summary = {"tasks": results, "quick": quick, "preset": preset}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    from mmalign.report import report

    report(out)
    return summary
