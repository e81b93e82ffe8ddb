"""The shared frozen-work cache: keyed by content, encoder weights and preprocessing; atomic
on disk; found again by a new process; an optional storage dtype."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mmalign.modalities import frozen_cache
from mmalign.modalities.frozen_cache import FrozenCache, weights_hash

ENTRY = {"mean": torch.linspace(-1, 1, 64).view(4, 16), "ids": torch.arange(6)}


def encoder(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def open_cache(root, config=None, dtype=None, seed: int = 0) -> FrozenCache:
    return FrozenCache.open(root, "test", weights_hash([encoder(seed)]), config or {"resolution": 32}, dtype)


def test_entries_are_keyed_by_content(tmp_path):
    cache = open_cache(tmp_path)
    path = cache.put([b"image bytes", "a prompt"], ENTRY)
    assert cache.has([b"image bytes", "a prompt"]) and path.parent == cache.folder
    assert not cache.has([b"other bytes", "a prompt"])
    # parts are length-prefixed: ("ab", "c") is not ("a", "bc"); one part equals a one-part list
    assert cache.path(["ab", "c"]) != cache.path(["a", "bc"])
    assert cache.path(b"x") == cache.path([b"x"])
    got = cache.get([b"image bytes", "a prompt"])
    for key, value in ENTRY.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0)


def test_weights_config_and_dtype_key_the_folder(tmp_path):
    same = open_cache(tmp_path)
    assert open_cache(tmp_path).folder == same.folder
    assert open_cache(tmp_path, seed=1).folder != same.folder  # other encoder weights
    assert open_cache(tmp_path, config={"resolution": 64}).folder != same.folder
    assert open_cache(tmp_path, dtype=torch.bfloat16).folder != same.folder
    changed = encoder()
    with torch.no_grad():
        changed.weight[0, 0] += 1e-3
    assert weights_hash([changed]) != weights_hash([encoder()]) == weights_hash([encoder()])


def test_get_or_compute_computes_once(tmp_path):
    cache = open_cache(tmp_path)
    calls = []
    first = cache.get_or_compute("empty", lambda: calls.append(1) or ENTRY)
    second = cache.get_or_compute("empty", lambda: calls.append(1) or ENTRY)
    assert calls == [1]
    torch.testing.assert_close(first["mean"], second["mean"], rtol=0, atol=0)


def test_an_interrupted_write_leaves_no_entry(tmp_path, monkeypatch):
    """The file is written aside and renamed: a write that fails half-way leaves neither the
    entry nor its temporary file, and a temporary file left by a killed process is no entry."""
    cache = open_cache(tmp_path)

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a safetensors file")
        raise OSError("disk full")

    monkeypatch.setattr(frozen_cache, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put("key", ENTRY)
    assert not cache.has("key") and list(cache.folder.iterdir()) == []
    monkeypatch.undo()
    (cache.folder / f".{cache.path('key').name}.tmp99999").write_bytes(b"left by a killed run")
    assert not cache.has("key")
    cache.put("key", ENTRY)
    assert cache.has("key")


def test_found_again_by_a_new_process(tmp_path):
    """Keys are content digests, not Python's per-process hash: a resumed run finds the entry
    and does not compute it again."""
    cache = open_cache(tmp_path)
    cache.put([b"\x89PNG...", "a cube"], ENTRY)
    script = (
        "import sys, torch\n"
        "from test_frozen_cache import open_cache, ENTRY\n"
        "cache = open_cache(sys.argv[1])\n"
        "def fail():\n"
        "    raise SystemExit('computed again')\n"
        "got = cache.get_or_compute([b'\\x89PNG...', 'a cube'], fail)\n"
        "assert torch.equal(got['mean'], ENTRY['mean']), 'other values'\n"
        "print(cache.folder)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(cache.folder)


def test_storage_dtype_halves_the_disk_and_reads_back_the_given_dtype(tmp_path):
    """Stored as bfloat16 (2 bytes per value, not 4); read back as float32, rounded to bfloat16;
    integer tensors are stored as they are."""
    wide, narrow = open_cache(tmp_path / "f32"), open_cache(tmp_path / "bf16", dtype=torch.bfloat16)
    entry = {"mean": torch.randn(64, 64, generator=torch.Generator().manual_seed(0)), "ids": torch.arange(6)}
    big, small = wide.put("k", entry), narrow.put("k", entry)
    on_disk = load_file(str(small))
    assert on_disk["mean"].dtype == torch.bfloat16 and on_disk["ids"].dtype == torch.int64
    assert small.stat().st_size < 0.55 * big.stat().st_size
    got = narrow.get("k")
    assert got["mean"].dtype == torch.float32 and got["ids"].dtype == torch.int64
    torch.testing.assert_close(got["mean"], entry["mean"].to(torch.bfloat16).float(), rtol=0, atol=0)
    torch.testing.assert_close(got["ids"], entry["ids"], rtol=0, atol=0)
    assert (got["mean"] - entry["mean"]).abs().max() > 0  # it was rounded
