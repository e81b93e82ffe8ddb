"""What the peer benchmarks share: a step-end clock for each trainer, the statistics of
interleaved repetitions, and the package versions and JSON they write.

Not a benchmark itself (``vlm_trl.py`` and ``sdxl_naive.py`` are). Seconds per step are
measured the same way on every side: a timestamp at the end of every optimiser step, and the
median of the intervals between consecutive step ends. An interval therefore holds everything
a step does (collation, forwards, backward, clipping, the optimiser, logging), and the first
step, which pays one-off costs (lazy initialisation, allocator warm-up, the trainer's
first-step checks), has no interval of its own and is left out on every side alike.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

from accelerate.tracking import GeneralTracker

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ("mmalign", "torch", "transformers", "trl", "peft", "accelerate", "diffusers", "datasets")


class StepClock(GeneralTracker):
    """An accelerate tracker that keeps the time of every ``log`` call.

    mmalign's trainer calls ``accelerator.log`` once per optimiser step (with
    ``logging.every: 1``), after the step's optimiser update and its metrics line: the
    equivalent, on mmalign's side, of a ``TrainerCallback.on_step_end`` on TRL's. Handing the
    trainer an accelerator that carries this tracker times it with nothing added to the trainer.
    """

    name = "step_clock"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    @property
    def tracker(self) -> "StepClock":
        return self

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.ends.append(time.perf_counter())


def step_seconds(ends: Sequence[float]) -> float:
    """Median interval between consecutive step ends (the first step has none: warm-up)."""
    return statistics.median(intervals(ends))


def fastest_step(ends: Sequence[float]) -> float:
    """The shortest interval between consecutive step ends: the step the machine's other load
    disturbed least. Load only ever adds time, so on a shared machine this is the steadier
    second view of a step's cost; the median stays the measure the targets are read on."""
    return min(intervals(ends))


def intervals(ends: Sequence[float]) -> list[float]:
    if len(ends) < 2:
        raise ValueError(f"need at least two step ends to time a step, got {len(ends)}")
    return [b - a for a, b in zip(ends, ends[1:])]


def interleaved(arms: dict[str, Callable[[int], Sequence[float]]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """``{"median": {arm: [per repetition]}, "fastest": {...}}`` of seconds per step.

    ``arms[name](rep)`` runs one repetition of an arm and returns its step end times. Every
    repetition runs every arm once, in an order rotated by one each time, so load on the shared
    machine and any drift over the run fall on every arm alike rather than on whichever runs
    first or last."""
    names = list(arms)
    out = {"median": {name: [0.0] * repeats for name in names}, "fastest": {name: [0.0] * repeats for name in names}}
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            ends = arms[name](rep)
            out["median"][name][rep], out["fastest"][name][rep] = step_seconds(ends), fastest_step(ends)
            print(f"  repetition {rep + 1}/{repeats} {name}: {out['median'][name][rep]:.4f} s/step "
                  f"(fastest step {out['fastest'][name][rep]:.4f})", flush=True)
    return out


def spread(values: Sequence[float]) -> dict:
    """Median and min-max of one arm's per-repetition values."""
    return {"median": statistics.median(values), "min_max": [min(values), max(values)]}


def ratio(numerator: Sequence[float], denominator: Sequence[float], target: float | None = None) -> dict:
    """``median(numerator) / median(denominator)``; the per-repetition ratios, their median and
    min-max. A repetition's arms ran back to back (or in lockstep), so its ratio saw one
    machine load: when the load drifts across repetitions the medians of the two arms can come
    from different repetitions, and the median of the per-repetition ratios is the steadier
    figure. ``met`` (with a ``target``) is read on it."""
    per_rep = [a / b for a, b in zip(numerator, denominator)]
    out = {"median_ratio": statistics.median(numerator) / statistics.median(denominator),
           "median_of_ratios": statistics.median(per_rep), "per_repetition": per_rep,
           "min_max": [min(per_rep), max(per_rep)]}
    if target is not None:
        out.update(target=target, met=out["median_of_ratios"] <= target)
    return out


def versions() -> dict[str, str]:
    """Versions of the packages both sides run on, and of Python."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(load_before: tuple[float, float, float] | None = None) -> dict:
    """What besides the code decides a CPU number: cores, threads, OpenMP's wait policy, and
    the machine's load average (1, 5, 15 min) when the comparison began and when it ended."""
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: the runtime's default)"),
            "load_average_before": list(load_before) if load_before else None,
            "load_average_after": list(os.getloadavg())}


def write(result: dict, name: str, out: str | Path | None = None) -> Path:
    """Write ``result`` as ``benchmarks/results/<name>`` (or ``out``); return the path."""
    path = Path(out) if out else RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def mmalign_session(raw: dict, source: str, device: str = "cpu", clock: StepClock | None = None):
    """``mmalign.train.run.train`` on the recipe ``raw`` with a :class:`StepClock` (``clock``,
    or a new one) in its accelerator; returns ``(session, step end times)``. The accelerator is
    the one the trainer would make itself (same precision, same device), plus the clock."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from mmalign import config
    from mmalign.train.run import train

    recipe = config.from_dict(raw, source=source)
    # one precision per process in accelerate: a run in a process that ran another starts fresh
    AcceleratorState._reset_state(reset_partial_state=False)
    clock = clock or StepClock()
    accelerator = Accelerator(mixed_precision=recipe.train.mixed_precision, cpu=device == "cpu",
                              log_with=[clock], project_dir=recipe.logging.output_dir)
    session = train(recipe, accelerator=accelerator)
    return session, clock.ends
