"""What mmalign ships besides code, and the one way to reach it: installed as ``mmalign.assets``.

The folder holds tiny data and tiny checkpoints (``README.md`` here says how each is remade)
and is package data, so a wheel carries it and ``importlib.resources`` finds it wherever
mmalign is installed: a source checkout, an editable install or site-packages. Code asks
:func:`path` for a file by its name under this folder, never for a path relative to a module.
The bundled recipes (the ``configs/`` folder, installed as ``mmalign.configs``) are reached the
same way, through :func:`recipe` and :func:`recipes`.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

#: the prefix by which a recipe names a shipped file (``data.train: assets/text_prefs/train.jsonl``)
PREFIX = "assets/"


def root() -> Path:
    """The folder of the shipped assets, wherever mmalign is installed."""
    return Path(str(resources.files(__name__)))


def path(name: str) -> Path:
    """The shipped file or folder ``name`` (``"toy/llava"``, ``"coco_objects.json"``)."""
    return root() / name


def resolve(value: str) -> str:
    """A recipe's path as the file it means: itself when it exists (relative to the current
    directory, as always); otherwise, for ``assets/NAME``, the shipped ``NAME``, so bundled
    recipes run from any directory and from a wheel."""
    if Path(value).exists() or not value.startswith(PREFIX):
        return value
    shipped = path(value[len(PREFIX):])
    return str(shipped) if shipped.exists() else value


def recipes() -> list[Path]:
    """The bundled YAML recipes, sorted."""
    folder = Path(str(resources.files("mmalign.configs")))
    return sorted(folder.glob("*.yaml"))


def recipe(name: str) -> Path | None:
    """The bundled recipe called ``name`` (``demo_text_dpo``, ``demo_text_dpo.yaml`` or
    ``configs/demo_text_dpo.yaml``), or None."""
    stem = Path(name).name.removesuffix(".yaml")
    return next((p for p in recipes() if p.stem == stem), None)
