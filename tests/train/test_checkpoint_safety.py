"""Checkpoints never run code on load, survive crashes and full disks, and name damaged files."""
from __future__ import annotations

import copy
import errno
import os
import random
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from torch import nn

from mmalign.errors import ConfigError, MmalignError, RunError
from mmalign.train import checkpoint
from mmalign.train.optim import make_scheduler
from mmalign.train.run import train

STATE_FILES = {"policy.safetensors", "trainer.safetensors", "trainer.json", "meta.json"}


class RunningMean(nn.Module):
    """Objective state as BCO keeps it: a learned part and a running statistic."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def tiny_run(seed: int = 0) -> SimpleNamespace:
    torch.manual_seed(seed)
    policy, state = nn.Linear(8, 8), RunningMean()
    optimizer = torch.optim.AdamW([*policy.parameters(), *state.parameters()], lr=1e-2)
    return SimpleNamespace(policy=policy, objective_state=state, optimizer=optimizer,
                           scheduler=make_scheduler(optimizer, "cosine", 2, 10))


def steps(run: SimpleNamespace, n: int) -> None:
    """Training steps that draw from torch's RNG, so resume must restore it too."""
    for _ in range(n):
        loss = run.policy(torch.randn(4, 8)).pow(2).mean() + run.objective_state.scale.pow(2).sum()
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
        run.objective_state.count += 1


def save(run: SimpleNamespace, run_dir: Path, step: int) -> Path:
    return checkpoint.save(run_dir, step, policy=run.policy, optimizer=run.optimizer,
                           scheduler=run.scheduler, objective_state=run.objective_state,
                           reference=None, recipe={"train": {"seed": 0}}, keep_last=3)


def load(run: SimpleNamespace, ckpt: Path) -> int:
    return checkpoint.load(ckpt, policy=run.policy, optimizer=run.optimizer,
                           scheduler=run.scheduler, objective_state=run.objective_state,
                           reference=None)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def assert_same(a, b, where="state"):
    """Equal values of equal types all the way down; tensors bitwise, with their dtype."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}.{i}")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


# ----------------------------------------------------------------- exact, and nothing pickled


def test_state_round_trips_exactly_through_safetensors_and_json(tmp_path):
    first = tiny_run()
    steps(first, 3)
    ckpt = save(first, tmp_path, 3)
    assert {p.name for p in ckpt.iterdir()} == STATE_FILES
    saved = copy.deepcopy({"optimizer": first.optimizer.state_dict(),
                           "scheduler": first.scheduler.state_dict()})
    expected_draws = draws()
    steps(first, 3)

    second = tiny_run(seed=1)  # other weights, no optimizer state, other RNG position
    random.seed(7), np.random.seed(7)
    assert load(second, ckpt) == 3
    assert_same(second.optimizer.state_dict(), saved["optimizer"])  # int keys, betas tuple
    assert_same(second.scheduler.state_dict(), saved["scheduler"])
    assert draws() == expected_draws  # torch, python and numpy RNG where they were
    steps(second, 3)
    for (name, a), b in zip(first.policy.named_parameters(), second.policy.parameters()):
        assert torch.equal(a, b), name
    assert torch.equal(first.objective_state.scale, second.objective_state.scale)
    assert int(second.objective_state.count) == 6


def test_read_state_gives_back_what_save_got(tmp_path):
    run = tiny_run()
    steps(run, 2)
    ckpt = save(run, tmp_path, 2)
    state = checkpoint.read_state(ckpt)
    assert_same(state["objective_state"], dict(run.objective_state.state_dict()))
    assert state["rng"]["python"][0] == 3 and isinstance(state["rng"]["python"], tuple)
    assert state["rng"]["numpy"][1].dtype == np.uint32


def test_state_that_needs_pickle_is_refused_at_save(tmp_path):
    class Warmup:  # LambdaLR saves a callable object's attributes, here one JSON cannot hold
        def __init__(self):
            self.log_dir = tmp_path

        def __call__(self, step):
            return 1.0

    run = tiny_run()
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, Warmup())
    with pytest.raises(TypeError, match="cannot store a PosixPath without pickle"):
        save(run, tmp_path, 1)
    assert list((tmp_path / "checkpoints").iterdir()) == []  # nothing half-written


class RunsCode:
    """Unpickling this creates ``marker``: what a crafted checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_pickle(ckpt: Path, marker: Path) -> Path:
    for name in ("trainer.safetensors", "trainer.json"):
        (ckpt / name).unlink()
    torch.save({"optimizer": RunsCode(marker)}, ckpt / "trainer.pt")
    return ckpt / "trainer.pt"


def test_pickled_trainer_pt_is_refused_without_being_unpickled(make_recipe, tmp_path):
    probe = tmp_path / "probe"  # the payload works: loading such a file runs it
    torch.save({"optimizer": RunsCode(probe)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)["optimizer"].close()
    assert probe.exists()

    first = train(make_recipe("first", train={"max_steps": 2, "save_every": 2}))
    marker = tmp_path / "code-ran"
    planted = plant_pickle(first.run_dir / "checkpoints/step-0000002", marker)
    with pytest.raises(ConfigError) as err:
        train(make_recipe("again", train={"max_steps": 4, "resume_from": str(first.run_dir)}))
    assert str(planted) in str(err.value)
    assert "pickled checkpoints are not loaded" in str(err.value)
    assert not marker.exists()


def test_load_refuses_trainer_pt_even_beside_safe_files(tmp_path):
    run = tiny_run()
    ckpt = save(run, tmp_path, 1)
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": RunsCode(marker)}, ckpt / "trainer.pt")
    with pytest.raises(ConfigError, match="trainer.pt: a pickled checkpoint"):
        load(run, ckpt)
    assert not marker.exists()


# ------------------------------------------------------------------------ damaged files named


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def scramble_header(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(b"\xff" * 8 + data[8:])


def empty(file: Path) -> None:
    file.write_bytes(b"")


@pytest.mark.parametrize("name", ["policy.safetensors", "trainer.safetensors"])
@pytest.mark.parametrize("damage", [truncate, scramble_header, empty])
def test_damaged_safetensors_is_named(tmp_path, name, damage):
    run = tiny_run()
    ckpt = save(run, tmp_path, 1)
    damage(ckpt / name)
    before = run.policy.weight.detach().clone()
    with pytest.raises(ConfigError) as err:
        load(run, ckpt)
    assert f"checkpoint file {ckpt / name} cannot be read" in str(err.value)
    assert "Resume from another checkpoint" in str(err.value)
    assert torch.equal(run.policy.weight, before)  # checked before anything changed


def test_trainer_json_naming_a_missing_tensor_is_named(tmp_path):
    ckpt = save(tiny_run(), tmp_path, 1)
    file = ckpt / "trainer.json"
    file.write_text(file.read_text().replace('"__tensor__": "t0"', '"__tensor__": "t999"'))
    with pytest.raises(ConfigError, match=r"trainer.json cannot be read \(it names a tensor 't999"):
        load(tiny_run(), ckpt)


@pytest.mark.parametrize("name", ["trainer.json", "meta.json"])
def test_damaged_json_is_named(tmp_path, name):
    ckpt = save(tiny_run(), tmp_path, 1)
    (ckpt / name).write_text('{"step": 1, "rec')
    with pytest.raises(ConfigError, match=f"checkpoint file {ckpt / name} cannot be read"):
        load(tiny_run(), ckpt)


def test_truncated_policy_on_resume_is_named(make_recipe):
    first = train(make_recipe("first", train={"max_steps": 2, "save_every": 2}))
    policy = first.run_dir / "checkpoints/step-0000002/policy.safetensors"
    truncate(policy)
    with pytest.raises(ConfigError, match=f"checkpoint file {policy} cannot be read"):
        train(make_recipe("again", train={"max_steps": 4, "resume_from": str(first.run_dir)}))


# ------------------------------------------------------------------------- atomic and durable


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_files_and_folder_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst, *args, **kwargs):
        events.append(("rename", str(src)))
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    save(tiny_run(), tmp_path, 1)
    tmp = str(tmp_path / "checkpoints/.tmp-step-0000001")
    at = events.index(("rename", tmp))
    before = {path for kind, path in events[:at] if kind == "fsync"}
    assert before >= {f"{tmp}/{name}" for name in STATE_FILES} | {tmp}
    assert ("fsync", str(tmp_path / "checkpoints")) in events[at:]  # the rename itself


def test_leftover_temporary_folders_are_removed(tmp_path):
    root = tmp_path / "checkpoints"
    for name in (".tmp-step-0000005", ".tmp-step-0000009"):
        (root / name).mkdir(parents=True)
        (root / name / "policy.safetensors").write_bytes(b"half")
    good = save(tiny_run(), tmp_path, 4)
    (root / ".tmp-step-0000009").mkdir()
    assert checkpoint.clean_leftovers(tmp_path) == [root / ".tmp-step-0000009"]
    assert sorted(p.name for p in root.iterdir()) == [good.name]
    assert checkpoint.clean_leftovers(tmp_path / "never-ran") == []


def test_saving_a_step_again_replaces_it(tmp_path):
    run = tiny_run()
    save(run, tmp_path, 1)
    steps(run, 1)
    again = save(run, tmp_path, 1)  # a resumed run passing the same step
    fresh = tiny_run(seed=1)
    load(fresh, again)
    assert torch.equal(fresh.policy.weight, run.policy.weight)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000001"]


# ------------------------------------------------------------------------- faults of the disk


def failing_writer(exc: Exception):
    def write(tensors, filename, *args, **kwargs):
        raise exc
    return write


FAULTS = [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left", "free space"),
    (OSError(errno.EACCES, "Permission denied"), "permission denied", "fix the folder's"),
    (OSError(errno.EPERM, "Operation not permitted"), "not permitted", "fix the folder's"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system", "writable disk"),
    (SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
     "no space left", "free space"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
     "no space left", "free space"),
]


@pytest.mark.parametrize(("exc", "what", "todo"), FAULTS,
                         ids=["ENOSPC", "EACCES", "EPERM", "EROFS", "safetensors", "torch"])
def test_disk_faults_are_named_and_keep_earlier_checkpoints(tmp_path, monkeypatch, exc, what, todo):
    run = tiny_run()
    good = save(run, tmp_path, 1)
    monkeypatch.setattr(checkpoint, "save_file", failing_writer(exc))
    with pytest.raises(RunError) as err:
        save(run, tmp_path, 2)
    message = str(err.value)
    target = tmp_path / "checkpoints" / "step-0000002"
    assert message.startswith(f"could not write checkpoint {target}: ")
    assert what in message.lower() and todo in message.lower() and "logging.output_dir" in message
    assert "\n" not in message and err.value.exit_code == 1 and isinstance(err.value, MmalignError)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [good.name]
    assert load(tiny_run(), good) == 1


def test_other_errors_pass_unchanged_and_leave_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "save_file", failing_writer(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        save(tiny_run(), tmp_path, 1)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_full_disk_during_training_stops_with_a_named_error_and_resumes(make_recipe, monkeypatch):
    real = checkpoint.save_file

    def fills_at_step_4(tensors, filename, *args, **kwargs):
        if "step-0000004" in filename:
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fills_at_step_4)
    recipe = make_recipe("full", train={"max_steps": 4, "save_every": 2})
    with pytest.raises(RunError, match=r"no space left on the device \(.*\.tmp-step-0000004/"):
        train(recipe)
    root = Path(recipe.logging.output_dir) / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-0000002"]
    monkeypatch.undo()  # space freed: the run goes on from its last checkpoint
    resumed = train(make_recipe("full", train={"max_steps": 4, "save_every": 2,
                                               "resume_from": str(root.parent)}))
    assert resumed.step == 4 and sorted(p.name for p in root.iterdir()) == [
        "step-0000002", "step-0000004"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs, so the disk really fills; skipped where mounting is not allowed."""
    if not shutil.which("mount") or getattr(os, "geteuid", lambda: 1)() != 0:
        pytest.skip("mounting a tiny tmpfs needs root and mount(8); the simulated faults cover "
                    "the same code")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the simulated faults "
                    "cover the same code")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb", buffering=0) as f:
        with pytest.raises(OSError) as err:
            while True:
                f.write(b"\0" * 4096)
    assert err.value.errno == errno.ENOSPC


def test_really_full_disk_is_named_and_keeps_earlier_checkpoints(tiny_disk):
    run = tiny_run()
    good = save(run, tiny_disk, 1)
    fill(tiny_disk)
    with pytest.raises(RunError, match="step-0000002: no space left on the device"):
        save(run, tiny_disk, 2)
    assert [p.name for p in (tiny_disk / "checkpoints").iterdir()] == [good.name]
    assert load(tiny_run(), good) == 1


def test_read_only_disk_is_named(tiny_disk):
    run = tiny_run()
    good = save(run, tiny_disk, 1)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(RunError, match="read-only file system .*writable disk"):
        save(run, tiny_disk, 2)
    assert load(tiny_run(), good) == 1

