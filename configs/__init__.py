"""The bundled YAML recipes, installed as ``mmalign.configs`` (package data); reached through
:func:`mmalign.assets.recipes`."""
