"""LLaVA: a tiny one built from configs (CLIP vision tower + Llama language model, random
init), and real checkpoints (LLaVA-1.5 and relatives) loaded from a local folder.

Both are the same classes, ``LlavaForConditionalGeneration`` and ``LlavaProcessor``, so the
code the tests run on the tiny model is the code that trains LLaVA-1.5-7B.
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    AutoModelForMultimodalLM,
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from mmalign.errors import ConfigError
from mmalign.models.seeded import seeded_model

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN)

# A word-level vocabulary: enough everyday English, the COCO object names (so CHAIR and POPE
# runs on the tiny model produce countable objects) and punctuation. Unknown words map to
# <unk>, which keeps the tokenizer total without any downloaded vocabulary.
_WORDS = """
user assistant system . , ? ! : ; ' " ( ) - a an the this that these those there here is are
was were be been being has have had do does did not no yes and or but with without of in on
at to from by for as into onto over under near next behind front left right top bottom side
middle center above below between around inside outside up down it its they them their he she
his her we you i my your what which who where when why how many much some any all each every
one two three four five six seven eight nine ten several few lot lots image picture photo
photograph scene view shows showing shown see seen can could would should will may might
describe detail details detailed briefly question answer please tell me about color colors
red blue green yellow white black brown gray grey orange pink purple dark light bright small
large big little tall short long old young new open closed standing sitting lying walking
running holding wearing playing eating looking parked flying riding sleeping waiting also
very other another same different only just more most group pair couple man men woman women
person people child children boy girl kid kids player players street road field grass water
sky tree trees building buildings room table wall floor window door ground snow beach city
background foreground area plate food sign
airplane plane jet aircraft apple backpack banana bat glove bear bed bench bicycle bike bird
boat ship book bottle bowl broccoli bus cake car cars carrot cat chair couch sofa clock cow
cup dining dog donut doughnut elephant fire hydrant fork frisbee giraffe hair drier dryer
handbag purse horse hot keyboard kite knife laptop computer microwave motorcycle motorbike
mouse orange oven parking meter pizza potted plant refrigerator fridge remote sandwich
scissors sheep sink skateboard skis ski snowboard spoon sports ball stop suitcase surfboard
teddy tennis racket tie toaster toilet toothbrush traffic truck tv television umbrella vase
wine glass zebra baseball
"""


class LlavaParts(NamedTuple):
    """A LLaVA model and the processor that prepares its inputs."""

    model: LlavaForConditionalGeneration
    processor: LlavaProcessor


def tiny_vocabulary() -> dict[str, int]:
    """Token -> id: the special tokens first, then each distinct word once."""
    vocab: dict[str, int] = {}
    for token in (*SPECIAL_TOKENS, *_WORDS.split()):
        vocab.setdefault(token, len(vocab))
    return vocab


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer that prepends ``<s>`` like LLaVA-1.5's does."""
    core = Tokenizer(models.WordLevel(tiny_vocabulary(), unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", core.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# LLaVA-1.5's conversation format, "USER: <image>\n{question} ASSISTANT: {answer}</s>", with
# every image placeholder rendered where it stands in the message (several images allowed).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'] | upper }}: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }} {% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}"
    "{{ item['text'] }} {% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def tiny_processor(image_size: int = 32, patch_size: int = 8) -> LlavaProcessor:
    """CLIP image preprocessing at ``image_size`` plus :func:`tiny_tokenizer`."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tiny_tokenizer(), patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE)


def tiny_llava(**kwargs) -> LlavaForConditionalGeneration:
    """The model of :func:`tiny_llava_parts` (same keyword arguments)."""
    return tiny_llava_parts(**kwargs).model


def tiny_llava_parts(hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
                     num_kv_heads: int = 2, vision_hidden_size: int = 32, vision_layers: int = 2,
                     image_size: int = 32, patch_size: int = 8, seed: int = 0,
                     attn_implementation: str = "sdpa") -> LlavaParts:
    """A LLaVA-1.5-shaped model at tiny size, randomly initialised from ``seed``, and its
    processor.

    Same layout as LLaVA-1.5: CLIP ViT features from the second-to-last layer without the
    CLS token (``vision_feature_select_strategy="default"``), a two-layer GELU projector and
    a Llama decoder with grouped-query attention. An image becomes
    ``(image_size // patch_size) ** 2`` tokens (16 with the defaults).
    """
    processor = tiny_processor(image_size, patch_size)
    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=vision_layers, num_attention_heads=2, image_size=image_size,
        patch_size=patch_size, projection_dim=vision_hidden_size)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", tie_word_embeddings=False)
    model = seeded_model(LlavaForConditionalGeneration, config, tokenizer, seed, attn_implementation)
    return LlavaParts(model, processor)


#: builder name -> function returning the model (``mmalign.models`` resolves recipe names here)
BUILDERS: dict[str, Callable[..., LlavaForConditionalGeneration]] = {"tiny_llava": tiny_llava}
#: builder name -> function returning :class:`LlavaParts` (model and processor)
PARTS_BUILDERS: dict[str, Callable[..., LlavaParts]] = {"tiny_llava": tiny_llava_parts}


def load_llava(path: str, dtype: torch.dtype = torch.float32) -> LlavaParts:
    """A multimodal LM checkpoint (``save_pretrained`` folder: config, safetensors, processor
    files; LLaVA, LLaVA-NeXT-Video, Qwen2-VL / Qwen2.5-VL, Qwen2-Audio) from a local folder,
    through ``AutoModelForMultimodalLM``; nothing is downloaded."""
    if not os.path.isdir(path):
        raise ConfigError(
            f"model.path '{path}' is not a folder; give a local LLaVA checkpoint folder "
            "(with config.json, *.safetensors and the processor files) or use builder: tiny_llava")
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForMultimodalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    return LlavaParts(model.eval(), processor)
