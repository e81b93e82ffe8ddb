"""The vision side of a vision-language model: image and clip features written into their
token slots, and the positions a multimodal RoPE gives them. What the packed path
(:mod:`mmalign.modalities.tokens.forward`) embeds for a row, and what BDHS masks.

The model's own ``get_image_features`` / ``get_video_features`` run the vision tower and
projector once per image or clip (LLaVA, LLaVA-NeXT-Video, Qwen2-VL / Qwen2.5-VL alike); the
packed row holds the prompt, hence its media, once per pair. Media inputs are the processor's
(:mod:`.media`).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor, nn

from mmalign.modalities.tokens.forward import Embed, unwrap
from mmalign.modalities.tokens.layouts import NaiveLayout
from mmalign.modalities.vision_language.audio_features import qwen2_audio_features

#: the key (with the model's id) of a frozen vision side's features in a batch's ``frozen`` memo
MEMO = "vision_language/media_features"
#: which media inputs each feature function reads
FEATURE_INPUTS = {"image": ("pixel_values", "image_grid_thw", "image_sizes"),
                  "video": ("pixel_values_videos", "video_grid_thw"),
                  "audio": ("input_features", "feature_attention_mask")}
#: the inputs that give a media kind its features (present = the batch has that kind)
PIXELS = {"image": "pixel_values", "video": "pixel_values_videos", "audio": "input_features"}
#: what a cached feature entry keeps besides the features: the shapes positions are made from
SHAPE_INPUTS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")

#: ``{"image": [n_image_tokens, H], "video": [n_video_tokens, H]}``, the kinds present
Features = dict[str, Tensor]


def media_features(model: nn.Module, media: dict[str, Tensor]) -> Features:
    """Projected features of every image, clip and sound, each kind concatenated in row order."""
    out = {}
    for kind, pixels in PIXELS.items():
        if pixels not in media:
            continue
        function = getattr(model, f"get_{kind}_features", None)
        if function is None and kind == "audio":  # Qwen2-Audio computes them inside its forward
            out[kind] = qwen2_audio_features(base_of(model), media["input_features"], media["feature_attention_mask"])
            continue
        out[kind] = _flat(function(**_feature_kwargs(model, function, media, FEATURE_INPUTS[kind])))
    return out


def _feature_kwargs(model: nn.Module, function: Callable, media: dict[str, Tensor], keys) -> dict:
    """The media inputs ``function`` takes (pixels in the model's dtype), and LLaVA's
    feature-layer settings from the config."""
    accepts = inspect.signature(function).parameters
    kwargs = {k: media[k].to(model.dtype) if media[k].is_floating_point() else media[k]
              for k in keys if k in media and k in accepts}
    for name in ("vision_feature_layer", "vision_feature_select_strategy"):
        if name in accepts and getattr(model.config, name, None) is not None:
            kwargs[name] = getattr(model.config, name)
    return kwargs


def _flat(out) -> Tensor:
    features = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
    if isinstance(features, (list, tuple)):
        return torch.cat([f.reshape(-1, f.shape[-1]) for f in features], dim=0)
    return features.reshape(-1, features.shape[-1])


def image_features(model: nn.Module, pixel_values: Tensor) -> Tensor:
    """Projected features of every image (LLaVA's pixel values), ``[n_image_tokens, H]``."""
    return media_features(model, {"pixel_values": pixel_values})["image"]


def base_of(model: nn.Module) -> nn.Module:
    """The multimodal backbone (``LlavaModel``, ``Qwen2_5_VLModel``...) under any wrapper."""
    return unwrap(model).base_model


def vision_parts(model: nn.Module) -> list[nn.Module]:
    """Every module of the backbone but its language model: vision tower and projector
    (LLaVA), ``visual`` with its merger (Qwen2-VL), plus the resampler (LLaVA-NeXT-Video)."""
    return [module for name, module in base_of(model).named_children() if name != "language_model"]


def vision_frozen(model: nn.Module) -> bool:
    """No weight outside the language model trains, and none carries an adapter."""
    from mmalign.train.adapters import tuner_layers

    vision = [p for name, p in base_of(model).named_parameters() if not name.startswith("language_model.")]
    return not any(p.requires_grad for p in vision) and not any(tuner_layers(part) for part in vision_parts(model))


def token_ids(model: nn.Module) -> dict[str, int]:
    """The placeholder token id of each media kind the model has."""
    config = unwrap(model).config
    ids = {kind: getattr(config, f"{kind}_token_id", None) for kind in PIXELS}
    return {kind: i for kind, i in ids.items() if i is not None}


def embed(model: nn.Module, input_ids: Tensor, media: dict[str, Tensor] | Tensor | None,
          memo: dict | None = None) -> Tensor:
    """Token embeddings with each image's and clip's features written into its token slots
    (``media``: the processor's inputs, or LLaVA's pixel values alone).

    With ``memo`` (a batch's ``frozen`` dict), the features are kept there for ``model`` when
    its vision side is frozen, and a later call with the same model on the same batch reads
    them: the reference forward of a LoRA policy with its adapters off (the default LoRA
    targets leave the vision side alone) runs no vision tower again."""
    if isinstance(media, Tensor):
        media = {"pixel_values": media}
    if not media:
        return embed_features(model, input_ids, {})
    key = (MEMO, id(model))
    features = memo.get(key) if memo is not None else None
    if features is None:
        features = media_features(model, {k: v.to(input_ids.device) for k, v in media.items()})
        if memo is not None and vision_frozen(model):
            memo[key] = features
    return embed_features(model, input_ids, features)


def embed_features(model: nn.Module, input_ids: Tensor, features: Features | Tensor | None) -> Tensor:
    """Token embeddings with ``features[kind]`` ``[n_kind_tokens, H]`` in that kind's token slots."""
    if isinstance(features, Tensor):
        features = {"image": features}
    embeds = model.get_input_embeddings()(input_ids)
    for kind, token in token_ids(model).items():
        slots = input_ids == token
        given = (features or {}).get(kind)
        if given is None:
            if bool(slots.any()):
                raise ValueError(f"the batch has {kind} tokens but no {kind} inputs")
            continue
        if int(slots.sum()) != given.shape[0]:
            raise ValueError(f"the batch has {int(slots.sum())} {kind} tokens but its {kind}s give "
                             f"{given.shape[0]} feature vectors; the processor and model disagree on "
                             f"the number of tokens per {kind}")
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), given.to(embeds.device, embeds.dtype))
    return embeds


def media_embed(media: dict[str, Tensor] | Tensor | None, memo: dict | None = None) -> Embed:
    """The packed path's :data:`~mmalign.modalities.tokens.forward.Embed` for these media
    (``memo``: see :func:`embed`)."""
    return lambda model, input_ids: embed(model, input_ids, media, memo)


image_embed = media_embed


def rope_positions(model: nn.Module, layout: NaiveLayout, inputs: dict[str, Tensor]) -> Tensor | None:
    """The 3-D RoPE positions ``[3, N, L]`` the model's own ``get_rope_index`` gives the
    layout's rows (Qwen2-VL, Qwen2.5-VL: Wang et al. 2024, arXiv:2409.12191, section 2.1), or
    None for a model with plain positions. Text counts on by one, an image or clip takes
    temporal / height / width indices from its grid; a clip's temporal index advances by
    ``tokens_per_second * second_per_grid_ts`` per temporal patch."""
    base = base_of(model)
    rope_index = getattr(base, "get_rope_index", None)
    if rope_index is None:
        return None
    ids = layout.input_ids.to(base.device)
    kinds = token_ids(model)
    types = torch.zeros_like(ids)
    for value, kind in ((1, "image"), (2, "video")):
        if kind in kinds:
            types[ids == kinds[kind]] = value
    accepts = inspect.signature(rope_index).parameters
    shapes = {k: v.to(base.device) for k, v in inputs.items() if k in SHAPE_INPUTS and k in accepts}
    if "image_grid_thw" not in shapes and "video_grid_thw" not in shapes:
        return None  # text-only rows: the model's own 0, 1, 2, ... on every axis
    positions, _ = rope_index(ids, mm_token_type_ids=types, attention_mask=layout.attention_mask.to(base.device),
                              **shapes)
    return positions
