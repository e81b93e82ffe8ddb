"""Running a causal LM, or a LLaVA-style one, over a layout: its last hidden states.

The naive path calls the model's own backbone (``model.base_model``: ``LlamaModel`` of a
causal LM, ``LlavaModel`` with its vision tower) on ``N`` sequences, so the tests compare our
packed computation with transformers' reference one. The packed path embeds the tokens itself
(a plugin writes its condition's features, e.g. image features, into the embeddings), then
calls the decoder with the 4-D block mask and restarted position ids. Transformers' Llama
takes a 4-D mask as prepared (``masking_utils``), which is why the packed mask reaches every
attention layer unchanged.

Both return the hidden states before the LM head; :mod:`.logps` applies the head only where
a response token is predicted.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from mmalign.modalities.tokens.layouts import NaiveLayout, PackedLayout

#: ``embed(model, input_ids) -> [rows, L, H]`` input embeddings (``model`` unwrapped, ids on its device)
Embed = Callable[[nn.Module, Tensor], Tensor]


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a ``peft.PeftModel`` wrapper (adapters stay active)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def device_of(model: nn.Module):
    """Where the model's token embeddings (hence its inputs) live."""
    return unwrap(model).get_input_embeddings().weight.device


def token_embeddings(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Plain token embeddings: the :data:`Embed` of a text-only model."""
    return model.get_input_embeddings()(input_ids)


def packed_hidden(model: nn.Module, layout: PackedLayout, embed: Embed = token_embeddings,
                  position_ids: Tensor | None = None) -> Tensor:
    """Last hidden states ``[B, L, H]`` of the packed rows; ``position_ids`` replace the
    layout's 1-D ones (multimodal RoPE: ``[3, B, L]``)."""
    model = unwrap(model)
    device = device_of(model)
    input_ids, flat_positions = layout.ids_on(device)
    position_ids = flat_positions if position_ids is None else position_ids.to(device)
    embeds = embed(model, input_ids)
    out = model.get_decoder()(inputs_embeds=embeds, attention_mask=layout.mask_on(device, embeds.dtype),
                              position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


def sequence_hidden(model: nn.Module, layout: NaiveLayout, inputs: dict[str, Tensor] | None = None,
                    position_ids: Tensor | None = None) -> Tensor:
    """Last hidden states ``[N, L, H]`` from the model's own backbone over one sequence per
    row; ``inputs`` are its other keyword inputs (``pixel_values``), floats cast to its dtype;
    ``position_ids``, when given, replace the backbone's own."""
    model = unwrap(model)
    device = device_of(model)
    extra = {k: v.to(device, model.dtype) if v.is_floating_point() else v.to(device)
             for k, v in (inputs or {}).items()}
    if position_ids is not None:
        extra["position_ids"] = position_ids.to(device)
    out = model.base_model(input_ids=layout.input_ids.to(device), attention_mask=layout.attention_mask.to(device),
                           use_cache=False, **extra)
    return out.last_hidden_state
