"""Fixtures shared by test files. Keep each one small and general."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# nothing a test touches may come from the model hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """Runs compared with each other to 1e-6 (or bitwise) need the same reduction order."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def write_jsonl(tmp_path):
    """``write_jsonl(name, rows) -> Path``: one JSON object per line, in ``tmp_path``."""

    def write(name: str, rows: list[dict]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path

    return write


@pytest.fixture
def restore_registries():
    """Undo whatever a test registers, so plugins installed by one test leave no trace."""
    from mmalign import registry

    for r in registry.ALL.values():  # built-ins register once per process: load them before saving
        r._ensure_builtins()
    saved = {name: (dict(r._items), dict(r._origin), set(r._loaded_eps), r._builtins_loaded)
             for name, r in registry.ALL.items()}
    yield
    for name, r in registry.ALL.items():
        r._items, r._origin, r._loaded_eps, r._builtins_loaded = (
            saved[name][0], saved[name][1], saved[name][2], saved[name][3])


@pytest.fixture
def install_dist(tmp_path, monkeypatch, restore_registries):
    """``install_dist(name, entry_points, modules=None, source=None) -> Path``.

    Does what ``pip install`` does, without pip: writes ``<name>-0.1.0.dist-info`` (METADATA
    and entry_points.txt, ``{group: {entry name: "module:attr"}}``) and the given modules
    (``{module name: source text}``) into a folder put on ``sys.path``, plus an optional
    ``source`` folder on ``sys.path`` (as an editable install does). Modules imported from
    it are forgotten afterwards.
    """
    roots: list[str] = []

    def install(name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str] | None = None,
                source: Path | None = None) -> Path:
        site = tmp_path / f"site-{name}"
        info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items()) + "\n"
            for group, entries in entry_points.items()))
        for module, text in (modules or {}).items():
            (site / f"{module}.py").write_text(text)
        for folder in (site, source):
            if folder is not None:
                monkeypatch.syspath_prepend(str(folder))
                roots.append(str(folder))
        return site

    yield install
    # a module's __file__ starts with the sys.path entry it was found through
    for module in [m for m, mod in sys.modules.items()
                   if (getattr(mod, "__file__", None) or "").startswith(tuple(roots))]:
        del sys.modules[module]
