"""``mmalign demo``: run the registered demo tasks and write ``summary.json`` and a report.

The tasks themselves (toy worlds, their base models and measurements) are plugins in the
``mmalign.demos`` entry-point group; the core only runs them and collects what they measured.
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


def _check(result: dict, name: str) -> dict:
    missing = [k for k in KEYS if k not in result]
    if missing:
        raise ConfigError(f"demo task '{name}' returned no {', '.join(missing)}; a task returns "
                          f"dicts with keys {', '.join(KEYS)}")
    return {"task": str(result["task"]), "metric": str(result["metric"]),
            "before": float(result["before"]), "after": float(result["after"]),
            "higher_is_better": bool(result["higher_is_better"])}


def run_demo(out: str | Path, tasks: list[str] | None = None, steps: int | None = None,
             progress: bool = True, quick: bool = False) -> dict:
    """Run ``tasks`` (default: every installed one) under ``out``; ``quick`` runs each end to
    end in seconds, as a check that the install works, and its summary says it makes no claim."""
    out = Path(out)
    steps = QUICK_STEPS if quick else steps
    out.mkdir(parents=True, exist_ok=True)
    names = tasks or registry.demos.names()
    if not names:
        raise ConfigError("no demo tasks are installed (entry-point group mmalign.demos)")
    results = []
    for name in names:
        fn = registry.demos.get(name)
        produced = fn(out, steps=steps, progress=progress)  # a task writes under out/<task>/
        for result in produced if isinstance(produced, list) else [produced]:
            results.append(_check(result, name))
    summary = {"tasks": results, "quick": quick}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    from mmalign.report import report

    report(out)
    return summary
