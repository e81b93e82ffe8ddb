"""The run folder: one run at a time, another run's files kept unless asked, the recipe
written only once every check has passed.

Two runs started in one ``logging.output_dir`` used to both go ahead, logging each step
twice and mixing their checkpoints. The first now holds an exclusive lock on
``run.lock`` (``flock``, so a killed run leaves no stale lock); the second is refused with
the first one's PID and host.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

import yaml

from mmalign.errors import ConfigError

LOCK = "run.lock"
#: what a new run replaces under --overwrite
RUN_FILES = ("metrics.jsonl", "checkpoints", "export", "precomputed", "cache", "samples", "data_report.json")


class RunLock:
    """An exclusive lock on ``run_dir/run.lock``, held until :meth:`release` or exit."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            from mmalign.train.checkpoint import disk_fault

            fault = disk_fault(run_dir, exc, "the run folder (logging.output_dir)", "")
            raise (fault or exc) from exc
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "an unknown process"
            self.handle.close()
            raise ConfigError(f"logging.output_dir {run_dir} is in use by another run ({holder}); wait "
                              "for it to finish, or choose another logging.output_dir") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def check_run_dir(run_dir: Path, recipe, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder unless asked (nothing is deleted here)."""
    resumed = recipe.train.resume_from and Path(recipe.train.resume_from).resolve().is_relative_to(
        run_dir.resolve())
    if (run_dir / "metrics.jsonl").exists() and not resumed and not overwrite:
        raise ConfigError(f"logging.output_dir {run_dir} holds another run; pass --overwrite to "
                          "replace it, choose another output_dir, or set train.resume_from")


def start_run_dir(run_dir: Path, recipe, overwrite: bool) -> None:
    """After every check passed: clear a replaced run's files, write ``config.yaml``."""
    resumed = bool(recipe.train.resume_from)
    if overwrite and not resumed:
        for name in RUN_FILES:
            path = run_dir / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(recipe.dump(), sort_keys=False))


def write_data_report(run_dir: Path, counts: dict[str, dict[str, int]]) -> None:
    """``data_report.json``: what the data checks dropped, de-duplicated and repaired."""
    (run_dir / "data_report.json").write_text(json.dumps(counts, indent=1) + "\n")


def begin(run_dir: Path, recipe, overwrite: bool, counts: dict[str, dict[str, int]]) -> list[Path]:
    """Every check has passed: the folder becomes this run's (``config.yaml``, the data report),
    and half-written checkpoints of an earlier run are removed; returns those removed."""
    from mmalign.train.checkpoint import clean_leftovers

    start_run_dir(run_dir, recipe, overwrite)
    removed = clean_leftovers(run_dir)
    write_data_report(run_dir, counts)
    return removed
