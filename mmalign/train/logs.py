"""What a person watching a run sees: a progress bar, JSONL metrics, TensorBoard."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm


class MetricsLog:
    """Append-only ``metrics.jsonl`` in the run dir, one line per logged step."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled

    def write(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        if not self.enabled:
            return
        # NaN and inf are written as such (JSON's NaN / Infinity, which json and pandas read):
        # a curve must show the step where a run broke, not skip it
        row = {"step": step, "split": split, **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, forget lines written after the checkpoint so the curve stays one curve."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in keep))


class Averager:
    """Means of metrics over the micro-steps of one optimiser step, kept as tensors on their
    device: nothing waits for the device until :meth:`reduced` (or :meth:`means`) is read."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, Any]) -> None:
        for k, v in metrics.items():
            value = v.detach().float().mean() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            self.sums[k] = value if k not in self.sums else self.sums[k] + value.to(self.sums[k].device)
            self.counts[k] = self.counts.get(k, 0) + 1

    def reduced(self, reduce=None, device=None) -> dict[str, float]:
        """The means, averaged over processes by ``reduce`` (one collective for every metric)
        and read back to the host once."""
        keys = sorted(self.sums)
        if not keys:
            return {}
        stacked = torch.stack([(self.sums[k] / self.counts[k]).to(device or self.sums[k].device) for k in keys])
        if reduce is not None:
            stacked = reduce(stacked)
        return dict(zip(keys, stacked.tolist()))

    def means(self) -> dict[str, float]:
        return self.reduced()


def progress(total: int, start: int, enabled: bool):
    return tqdm(total=total, initial=start, disable=not enabled, desc="train", unit="step",
                dynamic_ncols=True)


def postfix(metrics: dict[str, float]) -> dict[str, str]:
    out = {"loss": f"{metrics.get('loss', float('nan')):.4f}"}
    if "rewards/margins" in metrics:
        out["margin"] = f"{metrics['rewards/margins']:.3f}"
    if "rewards/accuracies" in metrics:
        out["acc"] = f"{metrics['rewards/accuracies']:.2f}"
    return out


def trackers(logging_cfg) -> list[str]:
    """TensorBoard when asked; wandb when asked and installed (said in the log otherwise)."""
    import importlib.util
    import logging

    out = ["tensorboard"] if logging_cfg.tensorboard else []
    if logging_cfg.wandb:
        if importlib.util.find_spec("wandb") is None:
            logging.getLogger("mmalign").warning(
                "logging.wandb is set but wandb is not installed (pip install wandb); logging to "
                "JSONL%s only", " and TensorBoard" if out else "")
        else:
            out.append("wandb")
    return out


def flat_config(d: dict, prefix: str = "") -> dict:
    """Trackers take flat scalar hyperparameters."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float, str, bool)):
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = str(v)
    return out
