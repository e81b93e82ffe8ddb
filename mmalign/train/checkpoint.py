"""Checkpoints: atomic and durable, never unpickled, and exact on resume.

A checkpoint is a folder ``checkpoints/step-XXXXXXX`` holding

* ``policy.safetensors``: the trainable policy parameters;
* ``reference.safetensors``: the reference, only when it moves (TR-DPO sync);
* ``trainer.safetensors`` and ``trainer.json``: optimizer, scheduler, objective state and RNG
  state, their tensors in the first file and the rest of their structure in the second;
* ``meta.json``: the step and the recipe.

Nothing is pickled, so loading a checkpoint cannot run code from it. The folder is written as
``.tmp-step-XXXXXXX``, fsynced, then renamed, so a crash or a full disk never leaves a
half-written ``step-*`` folder, and faults of the disk are named with what to do.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmalign.errors import ConfigError, RunError

#: recipe keys a resumed run may change without changing what it computes
RESUMABLE_CHANGES = ("train.resume_from", "train.max_steps", "train.save_every", "train.keep_last",
                     "logging.", "eval.")

#: what to say for each fault of the disk: (what happened, what to do)
DISK_FAULTS = {
    errno.ENOSPC: ("no space left on the device",
                   "free space on that disk or choose another logging.output_dir"),
    errno.EDQUOT: ("disk quota exceeded",
                   "free space on that disk or choose another logging.output_dir"),
    errno.EACCES: ("permission denied",
                   "fix the folder's permissions or choose another logging.output_dir"),
    errno.EPERM: ("operation not permitted",
                  "fix the folder's permissions or choose another logging.output_dir"),
    errno.EROFS: ("read-only file system",
                  "choose another logging.output_dir on a writable disk"),
    errno.ENOTDIR: ("a file stands where a folder should be",
                    "choose another logging.output_dir, or move that file"),
}

#: the same faults as writers that raise no OSError word them (safetensors' Rust writer,
#: torch's zip writer, whose "unexpected pos" is how a full disk shows up there)
FAULT_TEXTS = (("no space left", errno.ENOSPC), ("os error 28", errno.ENOSPC),
               ("unexpected pos", errno.ENOSPC), ("file write failed", errno.ENOSPC),
               ("quota exceeded", errno.EDQUOT), ("permission denied", errno.EACCES),
               ("os error 13", errno.EACCES), ("operation not permitted", errno.EPERM),
               ("read-only file system", errno.EROFS), ("os error 30", errno.EROFS))

STATE_TENSORS, STATE_JSON, LEGACY_PICKLE = "trainer.safetensors", "trainer.json", "trainer.pt"


#: the trained weights a finished run leaves beside its export
TRAINED = "trained.safetensors"

def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def save(run_dir: Path, step: int, *, policy: nn.Module, optimizer, scheduler,
         objective_state: nn.Module | None, reference: nn.Module | None, recipe: dict,
         keep_last: int) -> Path:
    """Write ``checkpoints/step-XXXXXXX`` atomically and durably; prune to the last ``keep_last``.

    A fault of the disk removes the half-written folder, so the earlier checkpoints stay the
    newest, and becomes a RunError naming the path and what to do.
    """
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / f"step-{step:07d}", root / f".tmp-step-{step:07d}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        clean_leftovers(run_dir)
        tmp.mkdir()
        save_file(trainable_state(policy), str(tmp / "policy.safetensors"))
        if reference is not None:  # only when the reference moves (TR-DPO sync)
            save_file({n: p.detach().contiguous() for n, p in reference.state_dict().items()},
                      str(tmp / "reference.safetensors"))
        _write_state(tmp, _trainer_state(optimizer, scheduler, objective_state))
        _write_text(tmp / "meta.json", json.dumps({"step": step, "recipe": recipe}, indent=1))
        _publish(tmp, final)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        fault = disk_fault(final, exc)
        if fault is None:
            raise
        raise fault from exc
    for old in sorted(root.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_trained(run_dir: Path, policy: nn.Module) -> Path:
    """``run_dir/trained.safetensors``: the trainable weights at the end of the run (the
    adapter for LoRA), which ``mmalign eval RUN_DIR`` loads into the model its recipe builds.
    Written to a temporary name, fsynced, then renamed."""
    final, tmp = Path(run_dir) / TRAINED, Path(run_dir) / f".{TRAINED}.tmp"
    try:
        save_file(trainable_state(policy), str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.rename(final)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        fault = disk_fault(final, exc, "the trained weights", "")
        if fault is None:
            raise
        raise fault from exc
    return final


def load_trained(run_dir: Path, policy: nn.Module) -> None:
    """Put a run's ``trained.safetensors`` into ``policy`` (built as the run built it)."""
    _load_policy(Path(run_dir), policy, _read_tensors(Path(run_dir) / TRAINED))


def clean_leftovers(run_dir: Path) -> list[Path]:
    """Remove the ``.tmp-step-*`` folders a crash or a full disk left in ``run_dir/checkpoints``.

    They are never complete checkpoints (a complete one is renamed to ``step-*``), so nothing
    good is lost; left alone they would fill the disk run after run. Returns what went.
    """
    leftovers = sorted((Path(run_dir) / "checkpoints").glob(".tmp-step-*"))
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def disk_fault(path: Path, exc: BaseException, writing: str = "checkpoint",
               kept: str = "; earlier checkpoints are untouched") -> RunError | None:
    """``exc`` as a RunError when it is a fault of the disk (full, read-only, no permission,
    a file where a folder should be): what could not be written, why, and what to do."""
    code = exc.errno if isinstance(exc, OSError) and exc.errno in DISK_FAULTS else None
    text = str(exc).lower()
    code = code or next((c for words, c in FAULT_TEXTS if words in text), None)
    if code is None:
        return None
    what, todo = DISK_FAULTS[code]
    named = isinstance(exc, OSError) and exc.filename
    detail = f"{exc.filename}: {exc.strerror}" if named else str(exc)
    return RunError(f"could not write {writing} {path}: {what} ({detail}). {todo.capitalize()}{kept}")


def _trainer_state(optimizer, scheduler, objective_state: nn.Module | None) -> dict:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "objective_state": objective_state.state_dict() if objective_state is not None else None,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": np.random.get_state()},
    }


def _write_state(folder: Path, state: dict) -> None:
    """Tensors to safetensors, everything else to JSON: neither format can carry code."""
    tensors: dict[str, torch.Tensor] = {}
    text = json.dumps(_encode(state, tensors), indent=1)
    save_file(tensors, str(folder / STATE_TENSORS))
    _write_text(folder / STATE_JSON, text)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON form of ``value`` that decodes to equal values and types; tensors go to ``tensors``.

    Tuples, numpy arrays and dicts with keys JSON cannot keep (the optimizer's integer keys)
    are marked, so ``load_state_dict`` and ``random.setstate`` get back what they gave.
    """
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a checkpoint cannot store a {type(value).__name__} without pickle; keep "
                    "optimizer, scheduler and objective state to tensors, numbers and strings")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"])
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _publish(tmp: Path, final: Path) -> None:
    """fsync the files and the folder, then rename; the rename is what makes it a checkpoint.

    Without the fsyncs a power cut after the rename can leave a ``step-*`` folder of empty
    files. A folder of the same step (a resumed run passing that step again) is replaced.
    """
    for file in tmp.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (new files, a rename) durable; Windows cannot open folders."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def find(resume_from: str) -> Path:
    """A checkpoint folder, or the newest one in a run dir; a pickled one is refused."""
    path = Path(resume_from)
    found = [path] if (path / "meta.json").is_file() else (
        sorted((path / "checkpoints").glob("step-*")) if path.is_dir() else [])
    if not found:
        raise ConfigError(f"train.resume_from {path}: no checkpoint there (expected a "
                          "checkpoints/step-* folder or a run dir holding one)")
    refuse_pickles(found[-1])
    return found[-1]


def refuse_pickles(ckpt: Path) -> None:
    """Refuse a checkpoint an older version pickled: unpickling a file runs any code it holds."""
    legacy = Path(ckpt) / LEGACY_PICKLE
    if legacy.exists():
        raise ConfigError(f"train.resume_from {legacy}: a pickled checkpoint; pickled checkpoints "
                          "are not loaded, since unpickling a file can run any code in it. Start "
                          "a new run, or resume from a checkpoint this version wrote "
                          f"({STATE_TENSORS} and {STATE_JSON})")


def check_compatible(ckpt: Path, recipe: dict) -> None:
    saved = _read_meta(ckpt)["recipe"]
    diffs = [k for k in sorted(set(_flat(saved)) | set(_flat(recipe)))
             if _flat(saved).get(k) != _flat(recipe).get(k) and not k.startswith(RESUMABLE_CHANGES)]
    if diffs:
        a, b = _flat(saved), _flat(recipe)
        detail = "; ".join(f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in diffs[:5])
        raise ConfigError(f"train.resume_from {ckpt}: the checkpoint comes from another recipe "
                          f"({detail}). Resume with the same model, data, objective and training "
                          "settings, or start a new run")


def load(ckpt: Path, *, policy: nn.Module, optimizer, scheduler, objective_state: nn.Module | None,
         reference: nn.Module | None) -> int:
    """Restore what ``save`` wrote and return its step.

    Every file is read and checked before anything changes, so a damaged one is named instead
    of half-restoring the run. Only safetensors and JSON are read; ``trainer.pt`` is refused.
    """
    ckpt = Path(ckpt)
    refuse_pickles(ckpt)
    step = _read_meta(ckpt)["step"]
    weights = _read_tensors(ckpt / "policy.safetensors")
    moved = ckpt / "reference.safetensors"
    reference_weights = _read_tensors(moved) if reference is not None and moved.is_file() else None
    state = read_state(ckpt)
    _load_policy(ckpt, policy, weights)
    try:
        if reference_weights is not None:
            reference.load_state_dict(reference_weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if objective_state is not None and state["objective_state"] is not None:
            objective_state.load_state_dict(state["objective_state"])
        _set_rng(state["rng"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"train.resume_from {ckpt}: its saved state does not fit this run "
                          f"({type(exc).__name__}: {exc}); the checkpoint is damaged or comes "
                          "from another model or optimizer. Resume from another checkpoint or "
                          "start a new run") from None
    return step


def read_state(ckpt: Path) -> dict:
    """The optimizer, scheduler, objective and RNG state of a checkpoint, as ``save`` got them."""
    tensors = _read_tensors(Path(ckpt) / STATE_TENSORS)
    file = Path(ckpt) / STATE_JSON
    try:
        return _decode(_read_json(file), tensors)
    except KeyError as exc:
        raise ConfigError(_unreadable(file, f"it names a tensor {exc} that {STATE_TENSORS} "
                                            "lacks")) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(_unreadable(file, exc)) from None


def _load_policy(ckpt: Path, policy: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(policy.named_parameters())
    wrong = [n for n, v in weights.items() if n not in params or params[n].shape != v.shape]
    if wrong:
        raise ConfigError(f"train.resume_from {ckpt}: the policy has no parameters {wrong[:3]} "
                          "of the saved shapes; the checkpoint comes from another model")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def _set_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])


def _read_meta(ckpt: Path) -> dict:
    file = Path(ckpt) / "meta.json"
    meta = _read_json(file)
    if not (isinstance(meta, dict) and isinstance(meta.get("step"), int)
            and isinstance(meta.get("recipe"), dict)):
        raise ConfigError(_unreadable(file, "it holds no step and recipe"))
    return meta


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(_unreadable(file, "the file is missing")) from None
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise ConfigError(_unreadable(file, exc)) from None


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise ConfigError(_unreadable(file, "the file is missing"))
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as exc:  # a short file or a bad header
        raise ConfigError(_unreadable(file, exc)) from None


def _unreadable(file: Path, reason: Any) -> str:
    return (f"train.resume_from: checkpoint file {file} cannot be read ({reason}); the "
            "checkpoint is damaged or incomplete. Resume from another checkpoint (an earlier "
            "checkpoints/step-* folder) or start a new run")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    if isinstance(d, list) and d and isinstance(d[0], dict):
        out = {}
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: d}
