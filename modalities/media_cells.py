"""Where a data cell's media is: a path (relative paths are read from the data file's folder),
the encoded bytes, or a ``{"bytes", "path"}`` dict as ``datasets`` stores media; and a digest
of its content, by which the frozen-work caches find a clip. Shared by the audio and video
plugins; each names its kind and formats in its messages.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mmalign.data.io import RowRef

Source = str | bytes


def media_source(value: Any, where: RowRef, field: str, kind: str, formats: str) -> Source:
    """The cell's media as a path that exists or as bytes; otherwise a row-level DataError
    (``kind``: "audio", "video"; ``formats``: the encodings to suggest)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value:
        path = Path(value)
        path = path if path.is_absolute() else Path(where.file).parent / path
        if not path.exists():
            raise where.error(field, f"{kind} file '{path}' does not exist",
                              "Fix the path (relative paths are read from the data file's folder) or drop the row")
        return str(path)
    raise where.error(field, f"expected a {kind} file path or the encoded clip's bytes, got {type(value).__name__}",
                      f"Store the clip as a path (relative to the data file) or as encoded bytes ({formats})")


def content_digest(source: Source) -> str:
    """A digest of the clip's bytes: the cache finds a clip by its content, not its name."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()
