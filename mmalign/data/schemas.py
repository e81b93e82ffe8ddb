"""Built-in dataset schemas for text rows (registered in ``mmalign.registry.datasets``).

Schemas are registered by ``modality:name`` (``text:preference``); a recipe may write the bare
name when one modality has it. A schema is a function ``schema(row, where) -> list[dict]``: it takes one raw row (a dict
read by :func:`mmalign.data.io.read_rows`) and the :class:`~mmalign.data.io.RowRef` naming
it, and returns the normalised records that row yields (usually one), or raises
:class:`~mmalign.errors.DataError` through ``where.error(field, message, hint)``. The
modality's ``load_records`` adds each record's ``sample_id``. Every schema of every modality
returns the same record type: a plain dict with the modality's own keys and ``fields``, a
dict of the row's extra numeric columns (``{name: float}``, possibly empty).

Normalised text records hold either plain strings or chat message lists, never a mix: when
any of prompt / responses is a message list, a string prompt becomes one user message and a
string response one assistant message. Extra numeric columns (margin rewards, scores) are
kept in ``record["fields"]`` for objectives that ask for ``fields:<name>``.
"""
from __future__ import annotations

from typing import Any

from mmalign.data.io import RowRef, require_fields
from mmalign.registry import register_dataset

Messages = list[dict[str, str]]


@register_dataset("text:preference")
def preference(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """Paired rows: ``prompt``, ``chosen``, ``rejected``.

    Accepts the standard form (strings), the conversational form (``prompt`` a message list,
    ``chosen`` / ``rejected`` assistant message lists) and TRL's implicit-prompt form (no
    ``prompt``; ``chosen`` and ``rejected`` are whole conversations whose shared first
    messages are the prompt).
    """
    if row.get("prompt") is None and isinstance(row.get("chosen"), list):
        row = _split_implicit_prompt(row, where)
    require_fields(row, ("prompt", "chosen", "rejected"), where)
    prompt, chosen, rejected = _align(row, ("prompt", "chosen", "rejected"), where)
    return [{"prompt": prompt, "chosen": chosen, "rejected": rejected,
             "fields": numeric_fields(row, {"prompt", "chosen", "rejected"})}]


@register_dataset("text:unpaired")
def unpaired(row: dict[str, Any], where: RowRef) -> list[dict[str, Any]]:
    """Unpaired rows for KTO-style objectives: ``prompt``, ``completion``, ``label``.

    ``label`` is true for a desirable completion, false for an undesirable one (0 / 1 also
    accepted). A paired row (``prompt``, ``chosen``, ``rejected``) yields two records, chosen
    labelled true and rejected false, as TRL's ``unpair_preference_dataset`` does.
    """
    if row.get("completion") is None and row.get("chosen") is not None:
        return [_unpaired_record(pair["prompt"], pair[side], side == "chosen", row, where)
                for pair in preference(row, where) for side in ("chosen", "rejected")]
    require_fields(row, ("prompt", "completion", "label"), where)
    prompt, completion = _align(row, ("prompt", "completion"), where)
    return [_unpaired_record(prompt, completion, _label(row["label"], where), row, where)]


def _unpaired_record(prompt, completion, label: bool, row: dict[str, Any], where: RowRef) -> dict[str, Any]:
    known = {"prompt", "completion", "label", "chosen", "rejected"}
    return {"prompt": prompt, "completion": completion, "label": label,
            "fields": numeric_fields(row, known)}


def _label(value: Any, where: RowRef) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise where.error("label", f"must be true or false, got {value!r}",
                      "Use true for a desirable completion and false for an undesirable one")


def _align(row: dict[str, Any], names: tuple[str, ...], where: RowRef) -> list[str | Messages]:
    """The values of ``names`` (prompt first), all strings or all message lists."""
    values = [row[name] for name in names]
    for name, value in zip(names, values):
        if not isinstance(value, (str, list)):
            raise where.error(name, f"must be a string or a list of chat messages, got {type(value).__name__}")
    if all(isinstance(v, str) for v in values):
        return values
    out = []
    for index, (name, value) in enumerate(zip(names, values)):
        role = "user" if index == 0 else "assistant"
        out.append([{"role": role, "content": value}] if isinstance(value, str) else _messages(value, name, where))
    return out


def _messages(value: list, name: str, where: RowRef) -> Messages:
    """Keep ``role`` and ``content`` of each message; refuse anything else in their place.

    Other keys are dropped: columnar formats give every message the keys of all messages
    in the file, most of them null.
    """
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise where.error(name, f"message {index} must be an object with string 'role' and 'content', "
                              f"got {message!r}", "Write messages as {\"role\": ..., \"content\": ...}")
        if not message["content"].strip():
            raise where.error(name, f"message {index} has empty content", "Fill it in or drop the row")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _split_implicit_prompt(row: dict[str, Any], where: RowRef) -> dict[str, Any]:
    """TRL's implicit prompt: the messages ``chosen`` and ``rejected`` share at the start."""
    chosen, rejected = row["chosen"], row.get("rejected")
    if not isinstance(rejected, list):
        raise where.error("rejected", "must be a message list when 'chosen' is one and there is no 'prompt'")
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise where.error("prompt", "is missing and chosen / rejected share no first messages",
                          "Add a 'prompt' column, or start both conversations with the same messages")
    return {**row, "prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def numeric_fields(row: dict[str, Any], known: set[str] = frozenset()) -> dict[str, float]:
    """The row's numeric (not boolean) columns other than ``known``, as floats: a record's
    ``fields``, read by ``fields:<name>`` needs and ``data.weight_field``. Every schema of every
    modality uses this one."""
    return {k: float(v) for k, v in row.items()
            if k not in known and isinstance(v, (int, float)) and not isinstance(v, bool)}
