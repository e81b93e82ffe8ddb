"""Text records from a data file, through the core's ``text:preference`` / ``text:unpaired``
schemas (guessed from the first row's columns when not given)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmalign.data.checks import RowChecks
from mmalign.data.io import RowRef
from mmalign.errors import ConfigError
from mmalign.modalities.tokens.records import read_records


def load_records(path: str, schema: str | None, checks: RowChecks | None, chat_template: bool) -> list[dict[str, Any]]:
    """Records of ``path``, each with ``sample_id`` ``<file name>:<row>`` (``:<k>`` added when
    a row yields several), its ``fields`` and a ``source`` naming file and row."""
    name = Path(path).name

    def make(record: dict[str, Any], where: RowRef, k: int, count: int) -> dict[str, Any]:
        _check_record(record, where, schema, chat_template)
        return {**record, "fields": dict(record.get("fields") or {}),
                "sample_id": f"{name}:{where.row}" + (f":{k}" if count > 1 else ""),
                "source": {"file": str(where.file), "row": where.row}}

    return read_records(str(path), schema, guess=_guess_schema, make=make, checks=checks)


def _guess_schema(row: dict[str, Any], where: RowRef) -> str:
    if "completion" in row:
        return "text:unpaired"
    if "chosen" in row:
        return "text:preference"
    raise where.error(None, f"cannot tell the data layout from columns {', '.join(sorted(row))}",
                      "Set data.schema to 'preference' (prompt, chosen, rejected) or "
                      "'unpaired' (prompt, completion, label)")


def _check_record(record: dict[str, Any], where: RowRef, schema: str | None, chat_template: bool) -> None:
    keys = set(record)
    if not ({"prompt", "chosen", "rejected"} <= keys or {"prompt", "completion", "label"} <= keys):
        raise ConfigError(f"dataset schema '{schema}' does not produce text records (prompt with chosen / "
                          "rejected, or prompt with completion / label); use 'preference' or 'unpaired'")
    if not chat_template and not isinstance(record["prompt"], str):
        raise where.error("prompt", "is a chat conversation but chat_template is off",
                          "Set model.options.chat_template: true")
