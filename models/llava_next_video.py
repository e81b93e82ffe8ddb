"""LLaVA-NeXT-Video at tiny size: the real ``LlavaNextVideoForConditionalGeneration`` and
``LlavaNextVideoProcessor``, randomly initialised from configs. Nothing is downloaded.

LLaVA-NeXT-Video ("LLaVA-NeXT: A Strong Zero-shot Video Understanding Model", LLaVA-NeXT blog,
April 2024) is LLaVA-NeXT's any-resolution image model (itself LLaVA-1.5, Liu et al.,
arXiv:2310.03744, with image tiling) run on each frame of a clip: CLIP features of every
frame, average-pooled 2x2 (``spatial_pool_stride`` 2), projected into a Llama decoder, all
frames one after another. A clip of T frames of side S with CLIP patches of side p becomes

    tokens = T * (S / p)**2 / stride**2

(the CLS token is dropped, ``vision_feature_select_strategy="default"``). In the
``(T / tps) * (H / p) * (W / p) / merge**2`` form used for Qwen-VL, tps = 1 and merge =
stride. At the tiny sizes here (S 32, p 8, stride 2): **4 tokens per frame**, so a 4-frame
clip is **16 tokens** (8 frames: 32). A 32x32 *image* goes through LLaVA-NeXT's tiling
instead: 16 base patches + 16 tile patches + 4 row-newline tokens = **36 tokens**.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from tokenizers import AddedToken
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextImageProcessor,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaNextVideoProcessor,
    LlavaNextVideoVideoProcessor,
    PreTrainedTokenizerFast,
)

from mmalign.models.llava import IMAGE_TOKEN, tiny_tokenizer
from mmalign.models.seeded import seeded_model

VIDEO_TOKEN = "<video>"

#: the processor writes ``(S / p)**2 // 4`` tokens per frame whatever the config says, so
#: the model's pooling must be 2x2 (a stride of 2) for the counts to agree
SPATIAL_POOL_STRIDE = 2

# LLaVA-NeXT-Video's conversation format (Vicuna style, like LLaVA-1.5):
# "USER: <video>\n{question} ASSISTANT: {answer}</s>", with each image or video placeholder
# where it stands in the message; the processor expands the placeholders.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'] | upper }}: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }} {% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'video' %}<video>\n"
    "{% elif item['type'] == 'text' %}{{ item['text'] }} {% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


class LlavaNextVideoParts(NamedTuple):
    """A LLaVA-NeXT-Video model and the processor that prepares its inputs."""

    model: LlavaNextVideoForConditionalGeneration
    processor: LlavaNextVideoProcessor


def grid_pinpoints(image_size: int) -> list[list[int]]:
    """The resolutions LLaVA-NeXT may tile an image to: 1x1, 1x2, 2x1 and 2x2 tiles of
    ``image_size``. The image processor and the model config must hold the same list."""
    return [[image_size * rows, image_size * cols] for rows, cols in ((1, 1), (1, 2), (2, 1), (2, 2))]


def tiny_video_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny LLaVA's word-level tokenizer with a ``<video>`` placeholder added as a special
    token (its id comes after the words, so the LLaVA ids are unchanged)."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens([AddedToken(VIDEO_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llava_next_video_processor(image_size: int = 32, patch_size: int = 8) -> LlavaNextVideoProcessor:
    """LLaVA-NeXT-Video's processor at ``image_size``: CLIP-style frame preprocessing,
    LLaVA-NeXT any-resolution tiling for images (:func:`grid_pinpoints`) and
    :func:`tiny_video_tokenizer`. Videos come out as ``[B, T, 3, S, S]``."""
    crop = {"height": image_size, "width": image_size}
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": image_size}, crop_size=crop, image_grid_pinpoints=grid_pinpoints(image_size))
    video_processor = LlavaNextVideoVideoProcessor(size={"shortest_edge": image_size}, crop_size=crop)
    return LlavaNextVideoProcessor(
        video_processor=video_processor, image_processor=image_processor, tokenizer=tiny_video_tokenizer(),
        chat_template=CHAT_TEMPLATE, patch_size=patch_size, vision_feature_select_strategy="default",
        video_token=VIDEO_TOKEN, image_token=IMAGE_TOKEN, num_additional_image_tokens=1)


def tiny_llava_next_video_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 32,
                                 num_layers: int = 2, vision_hidden_size: int = 32, vision_layers: int = 2,
                                 image_size: int = 32, patch_size: int = 8) -> LlavaNextVideoConfig:
    """The config of :func:`tiny_llava_next_video`: CLIP ViT features from the second-to-last
    layer without CLS, 2x2 average pooling for video frames, a GELU projector and a Llama
    decoder with grouped-query attention."""
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=vision_layers, num_attention_heads=2, image_size=image_size,
        patch_size=patch_size, projection_dim=vision_hidden_size)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    per_side = image_size // patch_size
    return LlavaNextVideoConfig(
        vision_config=vision, text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        video_token_id=tokenizer.convert_tokens_to_ids(VIDEO_TOKEN),
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_grid_pinpoints=grid_pinpoints(image_size), spatial_pool_mode="average",
        spatial_pool_stride=SPATIAL_POOL_STRIDE, image_seq_length=per_side ** 2,
        video_seq_length=(per_side // SPATIAL_POOL_STRIDE) ** 2, tie_word_embeddings=False)


def tiny_llava_next_video_parts(hidden_size: int = 32, num_layers: int = 2, vision_hidden_size: int = 32,
                                vision_layers: int = 2, image_size: int = 32, patch_size: int = 8,
                                seed: int = 0, attn_implementation: str = "sdpa") -> LlavaNextVideoParts:
    """A LLaVA-NeXT-Video-shaped model at tiny size, randomly initialised from ``seed``, and
    its processor. A 4-frame 32x32 clip is 16 tokens (module docstring)."""
    processor = tiny_llava_next_video_processor(image_size, patch_size)
    tokenizer = processor.tokenizer
    config = tiny_llava_next_video_config(tokenizer, hidden_size, num_layers, vision_hidden_size,
                                          vision_layers, image_size, patch_size)
    model = seeded_model(LlavaNextVideoForConditionalGeneration, config, tokenizer, seed, attn_implementation)
    return LlavaNextVideoParts(model, processor)


def tiny_llava_next_video(seed: int = 0, **kwargs) -> LlavaNextVideoForConditionalGeneration:
    """The model of :func:`tiny_llava_next_video_parts` (same keyword arguments)."""
    return tiny_llava_next_video_parts(seed=seed, **kwargs).model


#: builder name -> function returning the model
BUILDERS: dict[str, Callable[..., LlavaNextVideoForConditionalGeneration]] = {
    "tiny_llava_next_video": tiny_llava_next_video}
#: builder name -> function returning :class:`LlavaNextVideoParts` (model and processor)
PARTS_BUILDERS: dict[str, Callable[..., LlavaNextVideoParts]] = {
    "tiny_llava_next_video": tiny_llava_next_video_parts}
