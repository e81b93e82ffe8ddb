"""Builders of tiny reference models and loaders of real checkpoints from local paths,
installed as ``mmalign.models``.

Each module keeps a ``BUILDERS`` mapping (name -> function); :func:`get_builder` finds a
name across them, so a recipe says ``model.builder: tiny_llama`` and nothing more.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

MODULES = ("text", "diffusion", "llava", "qwen_vl", "llava_next_video", "qwen2_audio")


def builders() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for name in MODULES:
        module = importlib.import_module(f"mmalign.models.{name}")
        found.update(getattr(module, "BUILDERS", {}))
    return found


def get_builder(name: str) -> Callable[..., Any]:
    from mmalign.errors import ConfigError

    known = builders()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown model builder '{name}'.{hint} Known builders: {', '.join(sorted(known))}")
    return known[name]
