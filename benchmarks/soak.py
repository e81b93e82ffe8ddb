"""Soak: does a long run's memory stay flat? 2,000 steps of the tiny text DPO recipe on the CPU.

The recipe is ``configs/demo_text_dpo.yaml`` built in code (tiny Llama-class model, LoRA,
reference = adapters off, held-out metrics every 10 steps) over the shipped
``text_prefs`` pairs, run for 2,000 steps as a user would run it: a checkpoint every 50
steps keeping the last 2, metrics logged every step to ``metrics.jsonl`` and TensorBoard.

The trainer has no per-step callback, so a background thread samples the process's resident
memory (RSS) every 0.5 s and reads the step reached from the tail of ``metrics.jsonl``.
Warm-up is the first 10% of the steps, at most 200 (200 for a 2,000-step run). Reported: RSS
at the end of warm-up, peak and final RSS, growth after warm-up (final vs warm-up end, and the
slope of a least-squares line through the post-warm-up samples, in MB per 1,000 steps),
steps per second, the checkpoints left at the end (keep_last), the sizes of what the run
keeps in memory or on disk per step (``Session.history``, ``metrics.jsonl``, TensorBoard
events), and ``rss_growth_below_5pct``. Torch runs on one thread (``torch.set_num_threads(1)``,
``OMP_NUM_THREADS=1``) so the run does not depend on what else the machine is doing.

    .venv/bin/python benchmarks/soak.py             # writes benchmarks/results/soak.json
    .venv/bin/python benchmarks/soak.py --steps 300 # a quick check; writes nothing
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mmalign import assets, config  # noqa: E402
from mmalign.train.run import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2000
SAVE_EVERY, KEEP_LAST = 50, 2
INTERVAL_S = 0.5
MB = 1024 * 1024

#: configs/demo_text_dpo.yaml, as a dict
DEMO = {
    "model": {"modality": "text", "builder": "tiny_llama",
              "builder_args": {"hidden_size": 32, "layers": 2},
              "lora": {"r": 8, "alpha": 16}, "options": {"max_length": 64}},
    "data": {"train": str(assets.path("text_prefs/train.jsonl")),
             "eval": str(assets.path("text_prefs/eval.jsonl")), "schema": "preference"},
    "objective": {"name": "dpo", "params": {"beta": 0.1}},
    "reference": {"strategy": "adapters_off"},
    "train": {"seed": 0, "batch_size": 8, "lr": 5.0e-3, "max_steps": 40, "scheduler": "cosine",
              "warmup_steps": 4},
    "eval": {"every": 10},
    "logging": {"output_dir": "runs/demo_text_dpo", "every": 1},
}


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Sampler(threading.Thread):
    """(seconds, step, rss) every ``interval`` s; the step is the last one in metrics.jsonl."""

    def __init__(self, metrics: Path, interval: float):
        super().__init__(daemon=True)
        self.metrics, self.interval = metrics, interval
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self._offset, self._tail, self._step = 0, b"", 0
        self.t0 = time.perf_counter()

    def step(self) -> int:
        """The step of the newest complete train line, reading only what was appended."""
        if not self.metrics.is_file():
            return self._step
        with self.metrics.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()  # an unfinished line waits for the next read
        for line in reversed(lines):
            if line.strip():
                row = json.loads(line)
                if row.get("split") == "train":
                    self._step = row["step"]
                    break
        return self._step

    def sample(self) -> None:
        self.samples.append((time.perf_counter() - self.t0, self.step(), rss_bytes()))

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()


def fit_slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of rss (bytes) on step, in MB per 1,000 steps."""
    n = len(points)
    mx = sum(s for s, _ in points) / n
    my = sum(r for _, r in points) / n
    sxx = sum((s - mx) ** 2 for s, _ in points)
    sxy = sum((s - mx) * (r - my) for s, r in points)
    return (sxy / sxx) / MB * 1000 if sxx else 0.0


def deep_size(rows: list[dict]) -> int:
    """Bytes held by a list of flat dicts: the list, each dict, its keys and values, each
    object counted once."""
    seen: set[int] = set()

    def once(obj) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return sys.getsizeof(obj)

    return once(rows) + sum(once(r) + sum(once(k) + once(v) for k, v in r.items()) for r in rows)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else (
        path.stat().st_size if path.is_file() else 0)


def source() -> dict:
    """The commit measured, and whether the working tree differed from it."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_changes": None if status is None else bool(status)}


def soak(steps: int) -> dict:
    torch.set_num_threads(1)
    warmup = min(200, max(1, steps // 10))
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        recipe = config.from_dict(config.merge(DEMO, {
            "train": {"max_steps": steps, "save_every": SAVE_EVERY, "keep_last": KEEP_LAST},
            "logging": {"output_dir": str(run_dir), "every": 1, "tensorboard": True,
                        "progress": False},
        }))
        rss_start = rss_bytes()
        sampler = Sampler(run_dir / "metrics.jsonl", INTERVAL_S)
        sampler.sample()
        sampler.start()
        started = time.perf_counter()
        session = train(recipe)
        seconds = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        rss_after = rss_bytes()
        checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
        events = sorted(run_dir.rglob("events.out.tfevents.*"))
        disk = {"metrics_jsonl_bytes": size(run_dir / "metrics.jsonl"),
                "tensorboard_event_bytes": sum(p.stat().st_size for p in events),
                "checkpoints_bytes": size(run_dir / "checkpoints")}
        history = {"entries": len(session.history), "approx_bytes": deep_size(session.history),
                   "json_bytes": len(json.dumps(session.history))}
        loop_s = session.seconds["train_loop"]

    samples = sampler.samples
    # samples taken inside the loop: after step 1 was logged and before the last step was
    in_loop = [(s, r) for _, s, r in samples if 0 < s < steps]
    at_warmup = next(((s, r) for s, r in in_loop if s >= warmup), None)
    post = [(s, r) for s, r in in_loop if s >= warmup]
    final = in_loop[-1] if in_loop else None
    if at_warmup is None or final is None or len(post) < 2:
        raise SystemExit(f"too few samples after warm-up (step {warmup}) to judge growth; "
                         "run more steps")
    growth_pct = 100 * (final[1] - at_warmup[1]) / at_warmup[1]
    return {
        "recipe": "configs/demo_text_dpo.yaml (built in code), max_steps as below, "
                  f"save_every {SAVE_EVERY}, keep_last {KEEP_LAST}, logging every 1, "
                  "TensorBoard on, eval every 10",
        "steps": steps,
        "warmup_steps": warmup,
        "sample_interval_s": INTERVAL_S,
        "samples": len(samples),
        "rss_mb_before_build": rss_start / MB,
        "rss_mb_warmup_end": at_warmup[1] / MB,
        "rss_warmup_end_at_step": at_warmup[0],
        "rss_mb_peak": max(r for _, _, r in samples) / MB,
        "rss_mb_final": final[1] / MB,
        "rss_final_at_step": final[0],
        "rss_mb_after_train_returned": rss_after / MB,
        "rss_growth_pct_after_warmup": growth_pct,
        # the same growth as a share of what the run itself added to the process (RSS at
        # warm-up end minus RSS before build, i.e. without the imported libraries)
        "rss_growth_pct_of_run_memory": 100 * (final[1] - at_warmup[1]) / (at_warmup[1] - rss_start),
        "rss_slope_mb_per_1000_steps": fit_slope(post),
        "rss_growth_below_5pct": growth_pct < 5,
        "steps_per_s": steps / loop_s,
        "seconds_train_loop": loop_s,
        "seconds_total": seconds,
        "checkpoints_at_end": len(checkpoints),
        "checkpoint_names": checkpoints,
        "checkpoints_as_expected": len(checkpoints) == KEEP_LAST,
        "session_history": history,
        "run_dir_files": disk,
        "source": source(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "torch_interop_threads": torch.get_num_interop_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "rss_trace": [{"s": round(t, 2), "step": s, "rss_mb": round(r / MB, 2)}
                      for t, s, r in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=STEPS,
                        help=f"training steps (default {STEPS}); other counts write no JSON")
    args = parser.parse_args()
    result = soak(args.steps)
    if args.steps == STEPS:
        path = ROOT / "benchmarks/results/soak.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_trace"}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
