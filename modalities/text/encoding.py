"""Turning a text record into token ids: the prompt, and each response by the BOS / EOS rule
of :mod:`mmalign.modalities.tokens.responses`, fitted by :mod:`~mmalign.modalities.tokens.truncation`.

With a chat template, the prompt is the rendered conversation up to the generation prompt and
a response is what the template adds after it (role markers and end of turn), as TRL does;
without one, prompt and response are concatenated as they are (the tokenizer's own convention
decides whether a BOS opens the prompt) and an EOS closes the response.
"""
from __future__ import annotations

from typing import Any, Sequence

from mmalign.errors import DataError
from mmalign.modalities.tokens.responses import response_tokens
from mmalign.modalities.tokens.truncation import PromptTooLong, fit


def encode(tokenizer, options, record: dict[str, Any], responses: Sequence[Any]) -> dict[str, list]:
    """``prompt_ids`` and ``response_ids`` (one list per response), fitted to ``max_length``."""
    prompt = prompt_ids(tokenizer, options.chat_template, record)
    ids = [response_ids(tokenizer, options.chat_template, record, r) for r in responses]
    try:
        prompt, keep = fit(prompt, [len(i) for i in ids], options.max_length, options.truncation,
                           options.max_prompt_length)
    except PromptTooLong as exc:
        raise record_error(record, "prompt", f"the prompt alone is {exc.length} tokens, which leaves no room "
                           f"for a response within max_length={exc.max_length}",
                           "Raise model.options.max_length, or set max_prompt_length to keep only the "
                           "prompt's last tokens") from None
    return {"prompt_ids": prompt, "response_ids": [i[k] for i, k in zip(ids, keep)]}


def prompt_ids(tokenizer, chat_template: bool, record: dict[str, Any]) -> list[int]:
    """The prompt's tokens, ending with the generation prompt when a chat template is used."""
    if chat_template:
        return tokenizer(render(tokenizer, record["prompt"], None), add_special_tokens=False).input_ids
    _require_text(record, record["prompt"])
    return tokenizer(record["prompt"]).input_ids


def response_ids(tokenizer, chat_template: bool, record: dict[str, Any], response: Any) -> list[int]:
    """A response's tokens (:func:`~mmalign.modalities.tokens.responses.response_tokens`)."""
    if chat_template:
        text = _template_suffix(tokenizer, record, response)
    else:
        text = _require_text(record, response)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return response_tokens(ids, tokenizer.bos_token_id, tokenizer.eos_token_id)


def render(tokenizer, prompt: Any, response: Any) -> str:
    """The conversation as the chat template writes it (with the generation prompt when no response)."""
    messages = as_messages(prompt, "user")
    if response is not None:
        messages += as_messages(response, "assistant")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=response is None)


def _template_suffix(tokenizer, record: dict[str, Any], response: Any) -> str:
    prompt_text = render(tokenizer, record["prompt"], None)
    full_text = render(tokenizer, record["prompt"], response)
    if not full_text.startswith(prompt_text):
        raise record_error(record, "prompt", "the chat template renders the prompt differently once a "
                           "response follows, so the response tokens cannot be told apart",
                           "Use a chat template whose generation prompt is a prefix of the conversation, "
                           "or set model.options.chat_template: false")
    return full_text[len(prompt_text):]


def _require_text(record: dict[str, Any], value: Any) -> str:
    if not isinstance(value, str):
        raise record_error(record, "prompt", "the row is a chat conversation but chat_template is off",
                           "Set model.options.chat_template: true")
    return value


def as_messages(value: Any, role: str) -> list[dict[str, str]]:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def record_error(record: dict[str, Any], field: str, message: str, hint: str) -> DataError:
    """A DataError naming the record's file and row (its ``source``), else its sample id."""
    source = record.get("source") or {}
    if source:
        return DataError(message, file=source.get("file"), row=source.get("row"), field=field, hint=hint)
    return DataError(f"sample '{record.get('sample_id', '?')}': {message}", field=field, hint=hint)
