"""The recipe's ``model.options`` every token plugin shares, as a pydantic model.

A plugin sets ``Options`` to a subclass (its own options added, its own defaults); the core
validates ``model.options`` against it, naming errors ``model.options.<key>``, and a plugin
built directly goes through the same check (:func:`parse_options`).
"""
from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from mmalign.config import validate_options

O = TypeVar("O", bound=BaseModel)


class TokenOptions(BaseModel):
    """* ``max_length``: most tokens in prompt + response (null: no limit); responses are
      shortened to fit, the prompt never is (:mod:`~mmalign.modalities.tokens.truncation`);
    * ``truncation``: ``keep_end`` keeps a long response's last tokens (its EOS is scored),
      ``keep_start`` its first ones;
    * ``packed``: score ``[prompt | chosen | rejected]`` as one sequence with a block mask, the
      prompt computed once per pair; false runs ``2B`` sequences;
    * ``max_new_tokens``: response length for ``sample``;
    * ``export_merged``: a LoRA policy's export also holds the merged model in ``merged/``.
    """

    model_config = ConfigDict(extra="forbid")

    max_length: StrictInt | None = Field(512, ge=2)
    truncation: Literal["keep_end", "keep_start"] = "keep_end"
    packed: StrictBool = False
    max_new_tokens: StrictInt = Field(128, ge=1)
    export_merged: StrictBool = False


def parse_options(schema: type[O], options: dict[str, Any], modality: str) -> O:
    """``options`` checked by ``schema`` (errors as the core words them: ``model.options.<key>``)."""
    return schema(**validate_options(schema, options, modality))
