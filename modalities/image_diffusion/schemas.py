"""Dataset schemas of the image-diffusion modality, registered in ``mmalign.registry.datasets``
as ``image_diffusion:<name>`` (a recipe may write the bare name).

A schema is a plain function ``(row: dict, where: RowRef) -> list[dict]``: it reads one row of
a table and returns the examples it holds as plain dicts, with the image cells still undecoded
(the loader decodes, repairs and counts)::

    {"prompt": str, "images": [cell, ...],          # winner first
     "image_fields": [column, ...], "prompt_field": column,   # where they came from, for messages
     "tie": bool, "label": float | None,             # label: unpaired rows, 1 desirable, 0 not
     "fields": {name: float}}                        # the row's other numeric columns

It raises ``DataError`` through ``where.error(field, ...)`` for a missing column or a value it
cannot use.
"""
from __future__ import annotations

import math
from typing import Any

from mmalign.data.schemas import numeric_fields
from mmalign.data.io import RowRef
from mmalign.registry import register_dataset


def example(prompt: str, images: list, image_fields: list[str], row: dict, read: set[str], *,
            prompt_field: str = "prompt", tie: bool = False, label: float | None = None) -> dict[str, Any]:
    """One example of ``row``; its numeric columns other than those ``read`` go to ``fields``."""
    return {"prompt": prompt, "images": images, "image_fields": image_fields, "prompt_field": prompt_field,
            "tie": tie, "label": label, "fields": numeric_fields(row, read)}


def _column(row: dict, name: str, where: RowRef, *aliases: str) -> Any:
    return row[_column_name(row, name, where, *aliases)]


def _column_name(row: dict, name: str, where: RowRef, *aliases: str) -> str:
    """The first of ``name`` and its aliases the row has a value for."""
    for key in (name, *aliases):
        if key in row and row[key] is not None:
            return key
    names = " or ".join(repr(k) for k in (name, *aliases))
    raise where.error(name, f"missing column {names} (columns present: {', '.join(sorted(map(str, row)))})",
                      "Rename the column, or choose the schema that matches the file (data.schema)")


def _prompt(row: dict, where: RowRef, name: str, *aliases: str) -> str:
    value = _column(row, name, where, *aliases)
    if not isinstance(value, str):
        raise where.error(name, f"the prompt must be text, got {type(value).__name__}", "Store the caption as a string")
    return value


@register_dataset("image_diffusion:pickapic")
def pickapic(row: dict, where: RowRef) -> list[dict[str, Any]]:
    """Pick-a-Pic (Kirstain et al. 2023): ``caption``, images ``jpg_0`` / ``jpg_1`` as bytes,
    ``label_0`` = 1 when image 0 is preferred, 0 when image 1 is, 0.5 for a tie.
    The winner is put first."""
    caption = _prompt(row, where, "caption")
    first, second = _column(row, "jpg_0", where), _column(row, "jpg_1", where)
    label = _column(row, "label_0", where)
    try:
        label = float(label)
    except (TypeError, ValueError, OverflowError):
        label = math.nan
    if label not in (0.0, 0.5, 1.0):
        raise where.error("label_0", f"label {row['label_0']!r} is not one of 0, 0.5, 1",
                          "Pick-a-Pic labels are 1 (jpg_0 preferred), 0 (jpg_1 preferred) or 0.5 (tie)")
    read = {"caption", "jpg_0", "jpg_1", "label_0", "label_1"}  # label_1 = 1 - label_0
    if label == 0.0:
        return [example(caption, [second, first], ["jpg_1", "jpg_0"], row, read, prompt_field="caption")]
    return [example(caption, [first, second], ["jpg_0", "jpg_1"], row, read, prompt_field="caption",
                    tie=label == 0.5)]


@register_dataset("image_diffusion:image_pairs")
def image_pairs(row: dict, where: RowRef) -> list[dict[str, Any]]:
    """A generic pair table: ``prompt`` (or ``caption``), ``chosen`` and ``rejected`` images
    as encoded bytes, ``{"bytes", "path"}`` dicts or file paths."""
    prompt = _prompt(row, where, "prompt", "caption")
    chosen, rejected = _column(row, "chosen", where), _column(row, "rejected", where)
    read = {"prompt", "caption", "chosen", "rejected"}
    return [example(prompt, [chosen, rejected], ["chosen", "rejected"], row, read,
                    prompt_field=_column_name(row, "prompt", where, "caption"))]


@register_dataset("image_diffusion:image_labels")
def image_labels(row: dict, where: RowRef) -> list[dict[str, Any]]:
    """Unpaired rows for KTO-style objectives: ``prompt``, ``image`` and ``label``
    (1 / true desirable, 0 / false undesirable)."""
    prompt = _prompt(row, where, "prompt", "caption")
    image = _column(row, "image", where)
    label = _column(row, "label", where)
    if not isinstance(label, (bool, int, float)) or label not in (0, 1):
        raise where.error("label", f"label {label!r} is not 0 or 1",
                          "Use 1 (or true) for a desirable image and 0 (or false) for an undesirable one")
    return [example(prompt, [image], ["image"], row, {"prompt", "caption", "image", "label"}, label=float(label),
                    prompt_field=_column_name(row, "prompt", where, "caption"))]
