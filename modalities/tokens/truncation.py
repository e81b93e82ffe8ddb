"""Fitting a prompt and its responses into ``max_length`` tokens without cutting the prompt.

``max_length`` bounds ``prompt + response`` for each response. Only responses are shortened
to fit it: a prompt cut by a length limit loses its instruction (or, for a vision-language
model, half an image's tokens, which the model then misreads or refuses), so a prompt that
leaves no room is an error the plugin names. ``max_prompt_length`` is the one way a prompt
gets shorter, asked for explicitly: it keeps the prompt's last tokens, those nearest the
response (as TRL does).

A response that does not fit keeps its last tokens (``keep_end``: its ending and the EOS that
closes it are scored) or its first ones (``keep_start``: no EOS is scored, the response does
not end inside the window).
"""
from __future__ import annotations

from typing import Sequence

TRUNCATIONS = ("keep_end", "keep_start")


class PromptTooLong(ValueError):
    """The prompt alone leaves no room for a response; the plugin turns it into a DataError
    that names the row."""

    def __init__(self, length: int, max_length: int):
        super().__init__(f"the prompt is {length} tokens, max_length is {max_length}")
        self.length, self.max_length = length, max_length


def kept(length: int, room: int | None, truncation: str) -> slice:
    """The part of a ``length``-token response kept in ``room`` tokens (``None``: no limit)."""
    if room is None or length <= room:
        return slice(0, length)
    return slice(0, room) if truncation == "keep_start" else slice(length - room, length)


def fit(prompt: Sequence[int], lengths: Sequence[int], max_length: int | None, truncation: str = "keep_end",
        max_prompt_length: int | None = None) -> tuple[list[int], list[slice]]:
    """The prompt (shortened only to ``max_prompt_length``) and, per response length, the
    slice of that response that fits; :class:`PromptTooLong` when no response token fits."""
    prompt = list(prompt)
    if max_prompt_length is not None:
        prompt = prompt[-max_prompt_length:]
    room = None if max_length is None else max_length - len(prompt)
    if room is not None and room < 1:
        raise PromptTooLong(len(prompt), max_length)
    return prompt, [kept(n, room, truncation) for n in lengths]
