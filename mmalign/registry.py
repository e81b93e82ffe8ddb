"""Name -> thing registries for modalities, objectives, reward scorers, dataset schemas and
evaluators.

Built-ins register with a decorator. Third-party packages (and the built-in modalities,
which are plugins like any other) register through entry points in the groups
``mmalign.modalities``, ``mmalign.objectives``, ``mmalign.rewards``, ``mmalign.datasets``
and ``mmalign.evaluators``; those load lazily, on the first lookup.

An entry point may name an object (registered under the entry point's name) or a module
(imported; its decorators do the registering).
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import types
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from mmalign.errors import ConfigError

T = TypeVar("T")


def _where(obj: Any) -> str:
    """Where an object was defined, for messages: ``module:qualname (file:line)``."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module = getattr(obj, "__module__", "?")
    name = getattr(obj, "__qualname__", type(obj).__qualname__)
    try:
        line = inspect.getsourcelines(obj)[1]
        return f"{module}:{name} ({inspect.getsourcefile(obj)}:{line})"
    except (OSError, TypeError):
        return f"{module}:{name}"


class Registry(Generic[T]):
    """One kind of named thing.

    ``builtins`` are modules imported before the first lookup (the core's own objectives).
    ``group`` is the entry-point group scanned lazily for plugins.
    """

    def __init__(self, kind: str, group: str, builtins: tuple[str, ...] = (), plural: str | None = None,
                 namespaced: bool = False):
        self.kind = kind
        #: names are ``namespace:name``; a bare ``name`` finds the one entry ending in ``:name``
        self.namespaced = namespaced
        self.plural = plural or kind + "s"
        self.group = group
        self._builtins = builtins
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._builtins_loaded = False
        self._loaded_eps: set[tuple[str, str]] = set()

    # -- registering -------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, origin: str | None = None):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""
        if obj is None:
            def decorator(target: T) -> T:
                self.register(name, target, origin=origin)
                return target
            return decorator
        where = origin or _where(obj)
        if name in self._items and self._items[name] is not obj:
            raise ConfigError(
                f"{self.kind} '{name}' is registered twice: first by {self._origin[name]}, "
                f"again by {where}. Rename one of them"
            )
        self._items[name] = obj
        self._origin[name] = where
        return obj

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)
        self._origin.pop(name, None)

    # -- looking up --------------------------------------------------------------------
    def get(self, name: str) -> T:
        self._ensure_builtins()
        if name not in self._items:
            # load only the plugins that can provide this name, so one broken plugin does not
            # take the others down; a module-valued entry point may register anything
            for ep in _entry_points(self.group):
                if ep.name == name:
                    self._load_entry_point(ep)  # the plugin of that very name: its error is the answer
                elif ":" not in ep.value:
                    try:
                        self._load_entry_point(ep)
                    except ConfigError:
                        continue  # named in the unknown-name message if the name stays unknown
        if name not in self._items and self.namespaced and ":" not in name:
            return self._items[self._qualified(name)]
        if name not in self._items:
            raise ConfigError(self._unknown_message(name))
        return self._items[name]

    def _qualified(self, name: str) -> str:
        """The one registered ``namespace:name`` for a bare ``name``."""
        self._load_all()
        matches = sorted(k for k in self._items if k.split(":", 1)[-1] == name)
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(f"{self.kind} '{name}' is ambiguous: {', '.join(matches)}; write the "
                              "qualified name")
        raise ConfigError(self._unknown_message(name))

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except ConfigError:
            return False
        return True

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._items)

    def survey(self) -> tuple[list[str], list[str]]:
        """``(names, broken)``: every name that loads, and one line per plugin that does not
        (an import error, a name taken twice), so one broken package hides nothing else."""
        broken = []
        try:
            self._ensure_builtins()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            broken.append(f"built-in {self.plural}: {type(exc).__name__}: {exc}")
        for ep in _entry_points(self.group):
            try:
                self._load_entry_point(ep)
            except ConfigError as exc:
                broken.append(str(exc))
        return sorted(self._items), broken

    def items(self) -> Iterator[tuple[str, T]]:
        self._load_all()
        return iter(sorted(self._items.items()))

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origin[name]

    def reload(self) -> None:
        """Scan entry points again (after installing a plugin in a running process)."""
        self._loaded_eps.clear()
        self._load_all()

    def _unknown_message(self, name: str) -> str:
        broken = []
        for ep in _entry_points(self.group):
            try:
                self._load_entry_point(ep)
            except ConfigError as exc:
                broken.append(str(exc))
        known = sorted(self._items)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        text = f"unknown {self.kind} '{name}'.{hint} Known {self.plural}: {', '.join(known) or '(none)'}"
        return text + "".join(f"\n(also: {b})" for b in broken)

    def _ensure_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            for module in self._builtins:
                importlib.import_module(module)

    def _load_all(self) -> None:
        self._ensure_builtins()
        for ep in _entry_points(self.group):
            self._load_entry_point(ep)

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        key = (ep.name, ep.value)
        if key in self._loaded_eps:
            return
        self._loaded_eps.add(key)
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        origin = f"entry point '{ep.name} = {ep.value}' of package {dist}"
        try:
            obj = ep.load()
        except Exception as exc:  # name the plugin, not a traceback from deep inside it
            self._loaded_eps.discard(key)
            raise ConfigError(
                f"cannot load {self.kind} plugin {origin}: {type(exc).__name__}: {exc}. "
                "Fix or uninstall that package"
            ) from exc
        if isinstance(obj, types.ModuleType) or self._items.get(ep.name) is obj:
            return  # a module's @register decorators did the registering
        self.register(ep.name, obj, origin=origin)


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    out = []
    for ep in metadata.entry_points(group=group):
        # an editable install and a regular one of the same package can both be visible
        if (ep.name, ep.value) not in seen:
            seen.add((ep.name, ep.value))
            out.append(ep)
    return out


modalities: Registry[Any] = Registry("modality", "mmalign.modalities", plural="modalities")
objectives: Registry[Any] = Registry("objective", "mmalign.objectives", builtins=("mmalign.objectives",))
rewards: Registry[Callable[..., Any]] = Registry("reward scorer", "mmalign.rewards")
#: dataset schemas are namespaced by modality: ``image_diffusion:pickapic``, ``text:preference``
datasets: Registry[Callable[..., Any]] = Registry("dataset schema", "mmalign.datasets",
                                                 builtins=("mmalign.data.schemas",), namespaced=True)
evaluators: Registry[Callable[..., Any]] = Registry("evaluator", "mmalign.evaluators")
#: ``mmalign demo`` tasks: ``fn(run_dir, steps=None, progress=True, preset="default") -> dict |
#: list[dict]`` with keys task, metric, before, after, higher_is_better; ``preset`` is
#: ``default`` (the set ``mmalign demo`` runs in minutes) or ``full`` (``--task NAME|all``)
demos: Registry[Callable[..., Any]] = Registry("demo task", "mmalign.demos")

ALL = {
    "modalities": modalities,
    "objectives": objectives,
    "rewards": rewards,
    "datasets": datasets,
    "evaluators": evaluators,
    "demos": demos,
}


def register_modality(name: str):
    return modalities.register(name)


def register_reward(name: str):
    return rewards.register(name)


def register_dataset(name: str):
    return datasets.register(name)


def register_evaluator(name: str):
    return evaluators.register(name)
