"""``mmalign data stats RECIPE``: what a recipe's data files hold, as a run would read them.

The recipe's modality is built and its policy loaded as ``mmalign train`` does (the tokenizer or
processor comes with the policy), then each data file (``data.train``, ``data.eval``) is read
through :func:`mmalign.data.checks.load_checked` and :func:`~mmalign.data.checks.check_loaded`,
under the recipe's ``data.schema`` and ``data.on_bad_row``. Per file:

* ``rows``: rows read; ``records``: records kept (pairs, or unpaired rows); ``checks``: what the
  checks counted (``deduplicated``, ``dropped: <reason>``, the modality's repairs);
* ``tokens``: ``{"prompt" | "chosen" | "rejected" | "completion": {"min", "median", "max"}}``
  over records, from the records' ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` /
  ``completion_ids``; a modality whose records hold no ids has them read from the batches its
  ``collate`` makes, when those hold them (a text model), and none otherwise (diffusion);
* ``modality``: the modality's own figures, from its optional hook
  ``stats(records) -> dict[str, float | int | str]`` (images and tokens per image for a
  vision-language model); absent when the modality has none.

Figures are of whole files: ``data.eval_fraction`` and ``data.limit`` are applied later, by the
trainer. Nothing here knows what an image is.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

from mmalign.data import checks

#: token-id keys of a record (or of a collated batch's inputs), by the name they are shown under
TOKEN_KEYS = {"prompt": "prompt_ids", "chosen": "chosen_ids", "rejected": "rejected_ids",
              "completion": "completion_ids"}
#: records collated at a time when token ids are read from batches
CHUNK = 64


def data_stats(recipe) -> dict[str, Any]:
    """The figures of every data file of ``recipe`` (a :class:`mmalign.config.Recipe`):
    ``{"modality": name, "files": {"train" | "eval": file_stats(...)}}``."""
    from mmalign.train.models import load_policy, model_spec
    from mmalign.train.run import build_modality

    modality = build_modality(recipe)
    data = recipe.data
    # every file is read before the model loads, as a run reads them: a bad file costs seconds
    loaded = {split: (path, *checks.load_checked(modality, path, data.schema_, data.on_bad_row))
              for split, path in (("train", data.train), ("eval", data.eval)) if path}
    load_policy(modality, model_spec(recipe))
    files = {split: file_stats(modality, path, records, counts, data.on_bad_row)
             for split, (path, records, counts) in loaded.items()}
    return {"modality": recipe.model.modality, "files": files}


def file_stats(modality: Any, path: str, records: list[dict[str, Any]], counts: dict[str, int],
               on_bad_row: str = "error") -> dict[str, Any]:
    """The figures of one data file: its ``records`` and ``counts`` as
    :func:`~mmalign.data.checks.load_checked` gave them, checked once more now that the
    policy (its tokenizer or processor) is loaded."""
    records = checks.check_loaded(modality, records, counts, on_bad_row)
    rows = counts["rows_read"] if "rows_read" in counts else _count_rows(path)
    lengths = token_lengths(modality, records)
    out: dict[str, Any] = {
        "path": str(path), "rows": rows, "records": len(records),
        "checks": {k: v for k, v in sorted(counts.items()) if k not in ("rows_read", "records_kept")},
        "tokens": {name: summary(values) for name, values in lengths.items()}}
    hook = getattr(modality, "stats", None)
    if callable(hook):
        out["modality"] = dict(hook(records))
    return out


def token_lengths(modality: Any, records: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """Lengths of each kind of token ids, one per record that has them; read from the
    records, else from the batches ``modality.collate`` makes of them (when those hold ids)."""
    if any(TOKEN_KEYS["prompt"] in r for r in records):
        return _lengths(records)
    collate = getattr(modality, "collate", None)
    if collate is None or not records:
        return {}
    lengths: dict[str, list[int]] = {}
    for start in range(0, len(records), CHUNK):
        inputs = collate(list(records[start:start + CHUNK])).inputs
        if TOKEN_KEYS["prompt"] not in inputs:  # a modality without tokens: no need to collate the rest
            return {}
        rows = [{key: inputs[key][b] for key in TOKEN_KEYS.values() if key in inputs}
                for b in range(len(inputs[TOKEN_KEYS["prompt"]]))]
        for name, values in _lengths(rows).items():
            lengths.setdefault(name, []).extend(values)
    return lengths


def _lengths(rows: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for name, key in TOKEN_KEYS.items():
        values = [len(r[key]) for r in rows if r.get(key) is not None]
        if values:
            out[name] = values
    return out


def summary(values: Sequence[float]) -> dict[str, float]:
    """``{"min", "median", "max"}`` of a non-empty list of numbers."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _count_rows(path: str) -> int:
    """Rows of a file, for a modality whose ``load_records`` does not count them."""
    from mmalign.data.io import read_rows

    return sum(1 for _ in read_rows(path))


def format_stats(result: dict[str, Any]) -> str:
    """``data_stats``'s result as the plain-text table ``mmalign data stats`` prints."""
    lines = [f"modality: {result['modality']}"]
    for split, stats in result["files"].items():
        lines += [f"data.{split}: {stats['path']}", f"  rows {stats['rows']}, records {stats['records']}"]
        lines += [f"  {key}: {value}" for key, value in stats["checks"].items()]
        if stats["tokens"]:
            lines.append(f"  {'tokens':<12}{'min':>8}{'median':>8}{'max':>8}")
            lines += [f"  {name:<12}{_number(s['min']):>8}{_number(s['median']):>8}{_number(s['max']):>8}"
                      for name, s in stats["tokens"].items()]
        else:
            lines.append("  tokens: none (this modality's records hold no token ids)")
        lines += [f"  {key}: {_number(value)}" for key, value in stats.get("modality", {}).items()]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
