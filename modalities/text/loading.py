"""Loading a causal language model and its tokenizer: from a local folder written by
``save_pretrained``, or from a ``mmalign.models.text`` builder (tiny models for tests and demos)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmalign.errors import ConfigError
from mmalign.modality import ModelSpec


def load(spec: ModelSpec, chat_template: bool) -> tuple[nn.Module, Any]:
    """The model (in ``spec.dtype``) and its tokenizer, checked to fit each other."""
    if spec.path:
        model, tokenizer = _from_folder(Path(spec.path), spec.dtype)
    elif spec.builder:
        model, tokenizer = _from_builder(spec.builder, spec.builder_args)
        model = model.to(spec.dtype)
    else:
        raise ConfigError("the model section needs a 'path' (a local model folder) or a 'builder'")
    if chat_template and tokenizer.chat_template is None:
        raise ConfigError("the tokenizer has no chat template; add one to its tokenizer_config.json "
                          "or set model.options.chat_template: false")
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                          f"{embeddings}; use a matching tokenizer")
    return model, tokenizer


def _from_folder(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_dir():
        raise ConfigError(f"model path {path} is not a folder; give a local folder written by save_pretrained")
    try:
        return (AutoModelForCausalLM.from_pretrained(path, dtype=dtype),
                AutoTokenizer.from_pretrained(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load a causal language model and tokenizer from {path}: {exc}") from exc


def _from_builder(name: str, args: dict[str, Any]):
    from mmalign.models import text as text_models

    if name not in text_models.BUILDERS:
        close = difflib.get_close_matches(name, list(text_models.BUILDERS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown text model builder '{name}'.{hint} "
                          f"Known text builders: {', '.join(sorted(text_models.BUILDERS))}")
    try:
        model = text_models.BUILDERS[name](**(args or {}))
    except TypeError as exc:
        raise ConfigError(f"model.builder_args do not fit builder '{name}': {exc}") from exc
    return model, text_models.TOKENIZERS[name]()
