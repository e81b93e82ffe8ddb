"""Seeded generation for a token plugin's ``sample(model, prompts, n, seeds, init, strength)``.

Each prompt is generated alone, from its own seed, under a forked RNG: prompt ``i``'s ``n``
samples depend only on the prompt and ``seeds[i]``, never on the other prompts of the call,
on batching, or on the caller's RNG state (which is left as it was). One prompt at a time
also means no padding, so no left / right padding pitfalls in generation.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from mmalign.errors import ConfigError
from mmalign.modalities.tokens.forward import unwrap


def refuse_init(init: Any, strength: Any, modality: str) -> None:
    """Token models generate from the prompt: there is no partial sample to continue from."""
    if init is not None or strength is not None:
        raise ConfigError(f"the {modality} modality cannot continue from a start sample: init and strength "
                          "are for diffusion models (img2img); sample from the prompts alone")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode (no dropout) without gradients; its mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def new_tokens(model: nn.Module, inputs: dict[str, Tensor], *, n: int, seed: int, do_sample: bool,
               max_new_tokens: int, pad_id: int | None) -> Tensor:
    """``[n, T]`` tokens generated after one prompt (``inputs`` of batch size 1), from ``seed`` alone."""
    device = inputs["input_ids"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = unwrap(model).generate(**inputs, do_sample=do_sample, num_return_sequences=n,
                                     max_new_tokens=max_new_tokens, pad_token_id=pad_id)
    return out[:, inputs["input_ids"].shape[1]:]
