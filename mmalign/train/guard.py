"""What a run does when its loss or gradient norm stops being a number.

``train.on_nonfinite`` is the one action vocabulary for watchdogs: ``stop`` (the default)
ends the run with exit 1 and the reason on the last line; ``skip`` drops the update and goes
on; ``checkpoint-and-stop`` first writes a checkpoint of the last good state (the bad update
is never applied: the check runs before ``optimizer.step()``).

The decision is taken across processes: every process learns whether any of them saw a
non-finite value, so all of them skip or stop together. A skip on one process alone would
leave the others waiting at the next collective, and DDP would hang.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
from typing import Sequence

import torch

from mmalign.errors import RunError

log = logging.getLogger("mmalign")

ACTIONS = ("stop", "skip", "checkpoint-and-stop")


class TrainingStopped(RunError):
    """A run stopped on purpose (a watchdog's ``stop``); the CLI exits 1 with this message."""


def step_flags(accelerator, values: Sequence[torch.Tensor | None], stop_requested: bool) -> tuple[bool, bool]:
    """``(every value finite on every process, a stop asked on any process)``: one all-reduce
    per step, so every process takes the same branch."""
    bad = sum(int(not torch.isfinite(v.detach().float()).all()) for v in values if v is not None)
    flags = torch.tensor([float(bad), float(stop_requested)], device=accelerator.device)
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, "sum")
    bad_all, stop_all = flags.tolist()
    return bad_all == 0, stop_all > 0


class StopSignals:
    """SIGTERM and SIGINT ask the run to stop after the step under way (a pre-empted job
    then keeps that step); a second signal acts as it would without this handler."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: str | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name
        log.warning("%s received: stopping after this step (send it again to stop at once)", self.requested)
        signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc) -> bool:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def report(step: int, sample_ids: Sequence[str], values: dict[str, float], action: str) -> str:
    """Log the step, the rows of this process's batch and the values; return one line."""
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    rows = ", ".join(sample_ids[:8]) + (f" and {len(sample_ids) - 8} more" if len(sample_ids) > 8 else "")
    line = f"step {step}: non-finite {shown} on rows {rows} (train.on_nonfinite={action})"
    log.error(line)
    return line


def signal_message(name: str, step: int, checkpoint: str | None, run_dir: str) -> str:
    if checkpoint is None:
        return (f"training stopped by {name} at step {step}; no checkpoint was written (train.save_every is 0), "
                "so a new run starts from the beginning")
    return (f"training stopped by {name} at step {step}; checkpoint {checkpoint}. Resume with the same "
            f"recipe and train.resume_from={run_dir}")


def stop_message(line: str, checkpoint: str | None) -> str:
    where = (f"; the last good state is in {checkpoint}: lower train.lr or use "
             "train.mixed_precision=bf16 and resume with train.resume_from") if checkpoint else (
        "; lower train.lr, check the data rows named, or set train.on_nonfinite=skip")
    return f"training stopped: {line}{where}"


def nonfinite_values(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if not math.isfinite(v)}
