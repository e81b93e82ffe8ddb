"""Reading recipe YAML as a person means it.

PyYAML follows YAML 1.1, where ``1e-1`` (no dot) and ``5e3`` are strings, not numbers, so
``beta: 1e-1`` was refused as "not a number"; and a key written twice silently kept the
last value. This loader reads any float literal of YAML 1.2 as a float and refuses a
repeated key with its line.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

#: YAML 1.2's float forms, the exponent without a dot included (1e-1, 5E3, .5, 1.)
_FLOAT = re.compile(r"""^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""",
                    re.X)


class DuplicateKey(yaml.YAMLError):
    pass


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 floats and no repeated keys."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(f"key '{key}' is written twice (lines {seen[key]} and "
                                   f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# Resolvers are matched by first character; the float pattern must see digits, signs and dots.
RecipeLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for first in "-+.0123456789":
    RecipeLoader.yaml_implicit_resolvers.setdefault(first, [])
    RecipeLoader.yaml_implicit_resolvers[first].insert(0, ("tag:yaml.org,2002:float", _FLOAT))
# plain integers stay integers: the int resolver comes first for them
for first in "-+0123456789":
    ints = [r for r in RecipeLoader.yaml_implicit_resolvers[first] if r[0] == "tag:yaml.org,2002:int"]
    rest = [r for r in RecipeLoader.yaml_implicit_resolvers[first] if r[0] != "tag:yaml.org,2002:int"]
    RecipeLoader.yaml_implicit_resolvers[first] = ints + rest


def load(text: str) -> Any:
    """Parse one YAML document with :class:`RecipeLoader`."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
