"""One on-disk cache of frozen work for every plugin family: VAE latents, text embeddings,
vision or audio features.

What a frozen encoder computes from an input is computed once and kept, so an epoch, a second
run or a resumed one never runs the encoder on it again. The cache does not know what it
holds: an entry is a dict of tensors under a key the plugin builds from the input's content
(its bytes, its text).

Layout: ``root/<name>-<folder key>/<entry digest>.safetensors``.

* The folder key hashes the frozen encoders' weights (:func:`weights_hash`), the plugin's
  preprocessing config (resolution, crop, processor settings) and the storage dtype: change
  any of them and the old entries are simply not found.
* The entry digest hashes the key's parts (bytes or text, each length-prefixed), never Python's
  ``hash``, so a new process finds what an earlier one wrote (resume).
* Writes go to a temporary name beside the entry and are renamed (``os.replace``): an
  interrupted write leaves no half entry, and two processes writing one entry leave one whole
  file.
* ``dtype`` (e.g. ``torch.bfloat16``, half the disk of float32) stores floating tensors
  rounded to it; each is read back in the dtype it was given in (kept in the file's metadata).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

Tensors = dict[str, Tensor]
#: an entry's key: one part or a sequence of parts, each bytes or text
Key = bytes | str | Sequence[bytes | str]
VERSION = 1


def digest(*parts: bytes | str, size: int = 16) -> str:
    """blake2b of ``parts``, each length-prefixed (so ``("ab", "c")`` and ``("a", "bc")`` differ)."""
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        data = part.encode() if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def weights_hash(modules: Iterable[nn.Module]) -> str:
    """A digest of frozen modules: their configs and, per weight tensor, its shape, sum and sum
    of squares (cheap, and any change of weights changes it)."""
    parts = []
    for module in modules:
        config = getattr(module, "config", None)
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        parts.append(json.dumps(config, sort_keys=True, default=str))
        with torch.no_grad():
            for name, p in module.state_dict().items():
                p64 = p.detach().double()
                parts.append(f"{name}:{tuple(p.shape)}:{p64.sum().item():.12e}:{p64.square().sum().item():.12e}")
    return digest(*parts)


@dataclass(frozen=True)
class FrozenCache:
    """Entries of one plugin, for one set of frozen weights and one preprocessing config."""

    folder: Path
    dtype: torch.dtype | None = None

    @classmethod
    def open(cls, root: str | os.PathLike, name: str, weights: str, config: Mapping,
             dtype: torch.dtype | None = None) -> "FrozenCache":
        """The cache of ``name`` under ``root`` for encoder ``weights`` (:func:`weights_hash`)
        and preprocessing ``config`` (JSON-able), created if absent."""
        text = json.dumps({"version": VERSION, "config": config, "dtype": str(dtype)}, sort_keys=True, default=str)
        folder = Path(root) / f"{name}-{digest(weights, text, size=10)}"
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, dtype)

    def path(self, key: Key) -> Path:
        parts = [key] if isinstance(key, (bytes, str)) else list(key)
        return self.folder / f"{digest(*parts)}.safetensors"

    def has(self, key: Key) -> bool:
        return self.path(key).is_file()

    def put(self, key: Key, tensors: Mapping[str, Tensor]) -> Path:
        """Write one entry atomically; returns its path."""
        path = self.path(key)
        write(path, tensors, self.dtype)
        return path

    def get(self, key: Key) -> Tensors:
        return read(self.path(key))

    def get_or_compute(self, key: Key, compute: Callable[[], Mapping[str, Tensor]]) -> Tensors:
        """The entry of ``key``, computed by ``compute()`` and written first when absent."""
        if not self.has(key):
            self.put(key, compute())
        return self.get(key)


def write(path: Path, tensors: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> None:
    """Save ``tensors`` (floating ones as ``dtype`` when given) to a temporary file beside
    ``path`` and rename it into place; the temporary file is removed if the write fails."""
    stored = {k: _stored(v, dtype) for k, v in tensors.items()}
    dtypes = json.dumps({k: str(v.dtype).removeprefix("torch.") for k, v in tensors.items()})
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(stored, str(tmp), metadata={"dtypes": dtypes})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: str | os.PathLike) -> Tensors:
    """An entry's tensors, each in the dtype it was written from."""
    with safe_open(str(path), framework="pt") as handle:
        dtypes = json.loads((handle.metadata() or {}).get("dtypes", "{}"))
        return {k: _restored(handle.get_tensor(k), dtypes.get(k)) for k in handle.keys()}


def _stored(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    t = t.detach().cpu().contiguous()
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def _restored(t: Tensor, dtype: str | None) -> Tensor:
    return t.to(getattr(torch, dtype)) if dtype else t
