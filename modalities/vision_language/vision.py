"""Image features of a LLaVA-style model, written into the image-token slots of the token
embeddings: what the packed path (:mod:`mmalign.modalities.tokens.forward`) embeds for a
vision-language row, and what BDHS masks.

The vision tower and projector run once per image (``get_image_features``); the packed row
holds the prompt, hence its images, once per pair.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mmalign.modalities.tokens.forward import Embed, unwrap

#: the key (with the model's id) of a frozen vision side's features in a batch's ``frozen`` memo
MEMO = "vision_language/image_features"


def image_features(model: nn.Module, pixel_values: Tensor) -> Tensor:
    """Projected image features of every image, concatenated: ``[n_image_tokens, H]``."""
    config = model.config
    out = model.get_image_features(
        pixel_values=pixel_values.to(model.dtype),
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy)
    features = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
    if isinstance(features, (list, tuple)):
        return torch.cat(list(features), dim=0)
    return features.reshape(-1, features.shape[-1])


def vision_parts(model: nn.Module) -> list[nn.Module]:
    """The vision tower and the projector of a LLaVA-style model."""
    inner = unwrap(model).base_model
    return [inner.vision_tower, inner.multi_modal_projector]


def vision_frozen(model: nn.Module) -> bool:
    """No vision or projector weight trains, and none carries an adapter."""
    from mmalign.train.adapters import tuner_layers

    parts = vision_parts(model)
    return not any(p.requires_grad for part in parts for p in part.parameters()) and not any(
        tuner_layers(part) for part in parts)


def embed(model: nn.Module, input_ids: Tensor, pixel_values: Tensor | None, memo: dict | None = None) -> Tensor:
    """Token embeddings with each image's features written into its image-token slots.

    With ``memo`` (a batch's ``frozen`` dict), the features are kept there for ``model`` when
    its vision side is frozen, and a later call with the same model on the same batch reads
    them: the reference forward of a LoRA policy with its adapters off (the default LoRA
    targets leave the vision tower and projector alone) runs neither again."""
    if pixel_values is None:
        return embed_features(model, input_ids, None)
    key = (MEMO, id(model))
    features = memo.get(key) if memo is not None else None
    if features is None:
        features = image_features(model, pixel_values.to(input_ids.device))
        if memo is not None and vision_frozen(model):
            memo[key] = features
    return embed_features(model, input_ids, features)


def embed_features(model: nn.Module, input_ids: Tensor, features: Tensor | None) -> Tensor:
    """Token embeddings with ``features`` ``[n_image_tokens, H]`` in the image-token slots."""
    embeds = model.get_input_embeddings()(input_ids)
    slots = input_ids == model.config.image_token_id
    if features is None:
        if bool(slots.any()):
            raise ValueError("the batch has image tokens but no pixel values")
        return embeds
    if int(slots.sum()) != features.shape[0]:
        raise ValueError(f"the batch has {int(slots.sum())} image tokens but its images give "
                         f"{features.shape[0]} feature vectors; the processor and model disagree on "
                         "the number of tokens per image")
    return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.device, embeds.dtype))


def image_embed(pixel_values: Tensor | None, memo: dict | None = None) -> Embed:
    """The packed path's :data:`~mmalign.modalities.tokens.forward.Embed` for these images
    (``memo``: see :func:`embed`)."""
    return lambda model, input_ids: embed(model, input_ids, pixel_values, memo)
