"""Which tokens a response is: the one BOS / EOS rule of the token plugins.

The EOS that ends a response is a response token, scored like any other (as TRL's DPO
trainer does, following Rafailov et al. 2023: the policy chose to stop there). The BOS is
never a response token: it belongs to the prompt, where the tokenizer or the chat template
puts it, and no position predicts it. A prompt holds one BOS, never two: when the chat
template writes it (``{{ bos_token }}``, Llama-3 style), the tokenizer must not add another
(:func:`adds_bos`); a second BOS shifts every log-prob after it.
"""
from __future__ import annotations

from typing import Sequence


def adds_bos(tokenizer, text: str) -> bool:
    """Whether tokenizing ``text`` may add special tokens: not when ``text`` (a rendered chat
    template) already opens with the BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def response_tokens(ids: Sequence[int], bos_id: int | None, eos_id: int | None) -> list[int]:
    """``ids`` of a response as it is scored: a leading BOS dropped; ending with its EOS.

    A response that holds the EOS already (a chat template closes the assistant turn with it)
    ends there: what a template writes after it (a newline) is no generated token. A response
    without one gets it appended. A tokenizer without an EOS leaves the response as it is.
    """
    span, close = response_span(ids, bos_id, eos_id)
    return list(ids)[span] + ([eos_id] if close else [])


def response_span(ids: Sequence[int], bos_id: int | None, eos_id: int | None) -> tuple[slice, bool]:
    """The part of ``ids`` that :func:`response_tokens` keeps, and whether it appends the EOS
    (so that per-token side data, such as character offsets, can follow the same rule)."""
    ids = list(ids)
    start = 1 if ids and bos_id is not None and ids[0] == bos_id else 0
    if eos_id is None:
        return slice(start, len(ids)), False
    if eos_id in ids[start:]:
        return slice(start, len(ids) - ids[::-1].index(eos_id)), False
    return slice(start, len(ids)), True
