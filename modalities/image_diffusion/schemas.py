"""Dataset schemas of the image-diffusion modality, registered in ``mmalign.registry.datasets``.

A schema is a plain function ``(row: dict, where: RowRef) -> list[Candidate]``: it reads one
row of a table and returns the preference examples it holds, with the image cells still
undecoded (the loader decodes, repairs and counts). It raises ``DataError`` through
``where.error(field, ...)`` for a missing column or a value it cannot use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mmalign.registry import register_dataset

from mmalign.modalities.image_diffusion.images import RowRef


@dataclass
class Candidate:
    """One example from a row: a prompt and its images, winner first.

    ``image_fields`` and ``prompt_field`` name the columns the images and the prompt came
    from (for messages). ``tie`` marks a pair with no preferred image. ``label`` is set for
    unpaired rows (1 desirable, 0 not).
    """

    prompt: str
    images: list[Any]
    image_fields: list[str]
    tie: bool = False
    label: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    prompt_field: str = "prompt"


def _column(row: dict, name: str, where: RowRef, *aliases: str) -> Any:
    return row[_column_name(row, name, where, *aliases)]


def _column_name(row: dict, name: str, where: RowRef, *aliases: str) -> str:
    """The first of ``name`` and its aliases the row has a value for."""
    for key in (name, *aliases):
        if key in row and row[key] is not None:
            return key
    names = " or ".join(repr(k) for k in (name, *aliases))
    raise where.error(name, f"missing column {names} (columns present: {', '.join(sorted(row))})",
                      "Rename the column, or choose the schema that matches the file (data.schema)")


def _prompt(row: dict, where: RowRef, name: str, *aliases: str) -> str:
    value = _column(row, name, where, *aliases)
    if not isinstance(value, str):
        raise where.error(name, f"the prompt must be text, got {type(value).__name__}", "Store the caption as a string")
    return value


@register_dataset("pickapic")
def pickapic(row: dict, where: RowRef) -> list[Candidate]:
    """Pick-a-Pic (Kirstain et al. 2023): ``caption``, images ``jpg_0`` / ``jpg_1`` as bytes,
    ``label_0`` = 1 when image 0 is preferred, 0 when image 1 is, 0.5 for a tie.
    The winner is put first."""
    caption = _prompt(row, where, "caption")
    named = {"prompt_field": "caption"}
    first, second = _column(row, "jpg_0", where), _column(row, "jpg_1", where)
    label = _column(row, "label_0", where)
    try:
        label = float(label)
    except (TypeError, ValueError):
        label = math.nan
    if label not in (0.0, 0.5, 1.0):
        raise where.error("label_0", f"label {row['label_0']!r} is not one of 0, 0.5, 1",
                          "Pick-a-Pic labels are 1 (jpg_0 preferred), 0 (jpg_1 preferred) or 0.5 (tie)")
    if label == 0.0:
        return [Candidate(caption, [second, first], ["jpg_1", "jpg_0"], **named)]
    return [Candidate(caption, [first, second], ["jpg_0", "jpg_1"], tie=label == 0.5, **named)]


@register_dataset("image_pairs")
def image_pairs(row: dict, where: RowRef) -> list[Candidate]:
    """A generic pair table: ``prompt`` (or ``caption``), ``chosen`` and ``rejected`` images
    as encoded bytes, ``{"bytes", "path"}`` dicts or file paths."""
    prompt = _prompt(row, where, "prompt", "caption")
    chosen, rejected = _column(row, "chosen", where), _column(row, "rejected", where)
    return [Candidate(prompt, [chosen, rejected], ["chosen", "rejected"],
                      prompt_field=_column_name(row, "prompt", where, "caption"))]


@register_dataset("image_labels")
def image_labels(row: dict, where: RowRef) -> list[Candidate]:
    """Unpaired rows for KTO-style objectives: ``prompt``, ``image`` and ``label``
    (1 / true desirable, 0 / false undesirable)."""
    prompt = _prompt(row, where, "prompt", "caption")
    image = _column(row, "image", where)
    label = _column(row, "label", where)
    if label not in (0, 1, True, False):
        raise where.error("label", f"label {label!r} is not 0 or 1",
                          "Use 1 (or true) for a desirable image and 0 (or false) for an undesirable one")
    return [Candidate(prompt, [image], ["image"], label=float(label),
                      prompt_field=_column_name(row, "prompt", where, "caption"))]
