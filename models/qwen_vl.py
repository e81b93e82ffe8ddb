"""Qwen2.5-VL (Bai et al., "Qwen2.5-VL Technical Report", arXiv:2502.13923) at tiny size: the
real ``Qwen2_5_VLForConditionalGeneration`` and ``Qwen2_5_VLProcessor``, randomly initialised
from configs, with a byte-level BPE tokenizer trained in memory. Nothing is downloaded.

Qwen2.5-VL cuts an image or clip into ``patch_size`` x ``patch_size`` patches, each spanning
``temporal_patch_size`` frames (an image is repeated to fill them), and merges each
``merge_size`` x ``merge_size`` block of patches into one language-model token, so

    tokens = (T / temporal_patch_size) * (H / patch_size) * (W / patch_size) / merge_size**2

after the processor resizes H and W to multiples of ``patch_size * merge_size`` within its
pixel budget (``min_pixels`` .. ``max_pixels`` per frame). The tiny sizes here
(patch 8, temporal patch 2, merge 2, budget 32x32 .. 64x64 pixels):

* a 32x32 image: grid ``(1, 4, 4)`` -> 16 patches -> **4 tokens**;
* a 32x32 clip of 4 frames: grid ``(2, 4, 4)`` -> 32 patches -> **8 tokens**
  (8 frames: 16 tokens).
"""
from __future__ import annotations

import json
from typing import Callable, NamedTuple

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from mmalign.models.llava import tiny_vocabulary
from mmalign.models.seeded import seeded_model

PAD_TOKEN = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
#: Qwen's special tokens, in the order of their ids (they follow the BPE pieces, as in Qwen)
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN)

#: the default system turn Qwen2.5-VL's template adds when a conversation has none
DEFAULT_SYSTEM = "You are a helpful assistant."

#: spatial patch side, frames per patch and patches merged per side (vision tower and both
#: processors must agree, or the token count the processor writes differs from the features)
PATCH_SIZE, TEMPORAL_PATCH_SIZE, MERGE_SIZE = 8, 2, 2
#: per-frame pixel budget: a 32x32 frame stays 32x32 (4 tokens); nothing grows past 64x64
MIN_PIXELS, MAX_PIXELS = 32 * 32, 64 * 64

# Qwen2-VL / Qwen2.5-VL conversation format (ChatML): a default system turn, each turn as
# "<|im_start|>role\n...<|im_end|>\n", each image or video as a vision_start/pad/vision_end
# triple that the processor expands to the right number of pad tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class QwenVLParts(NamedTuple):
    """A Qwen2.5-VL model and the processor that prepares its inputs."""

    model: Qwen2_5_VLForConditionalGeneration
    processor: Qwen2_5_VLProcessor


def _bpe_corpus() -> list[str]:
    """Text to learn merges from: the tiny LLaVA's everyday/COCO words, each alone and after
    a space (byte-level BPE sees the two differently), and the template's role words."""
    words = [w for w in tiny_vocabulary() if not w.startswith("<")]
    words += ["system", "user", "assistant", "You", "helpful", "video", "clip", "frame"]
    return [f"{w} {w} {DEFAULT_SYSTEM}" for w in words]


def tiny_bpe(vocab_size: int = 512) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merge list learned in memory (all 256 byte symbols
    first, so any text encodes), to put inside Qwen's own tokenizer class."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(_bpe_corpus(), trainer)
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ", 1))
              for pair in json.loads(core.to_str())["model"]["merges"]]
    return core.get_vocab(), merges


def tiny_qwen_tokenizer() -> Qwen2Tokenizer:
    """Qwen's tokenizer class (Qwen's pre-tokenizer regex, byte-level) over :func:`tiny_bpe`,
    with Qwen's special tokens; ``<|im_end|>`` ends a turn and is the EOS, as in the
    instruction-tuned Qwen2.5-VL."""
    vocab, merges = tiny_bpe()
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token=IM_END, pad_token=PAD_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN, "video_token": VIDEO_TOKEN,
                              "vision_bos_token": VISION_START, "vision_eos_token": VISION_END,
                              "im_start_token": IM_START})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_qwen25_vl_processor() -> Qwen2_5_VLProcessor:
    """Qwen2.5-VL's processor with :func:`tiny_qwen_tokenizer` and image / video processors
    at the tiny patch sizes and pixel budget (see the module docstring for token counts).

    The video processor does not sample frames itself: callers hand it the frames they read
    (``mmalign.modalities.video_io.read_frames``)."""
    shared = dict(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH_SIZE,
                  temporal_patch_size=TEMPORAL_PATCH_SIZE, merge_size=MERGE_SIZE)
    image_processor = Qwen2VLImageProcessor(**shared)
    # cap_pixels_per_frame=True: the reference per-video budget (qwen-vl-utils); at these
    # sizes it never binds, and setting it silences transformers' deprecation warning
    video_processor = Qwen2VLVideoProcessor(**shared, cap_pixels_per_frame=True, do_sample_frames=False)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tiny_qwen_tokenizer(),
                               video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def tiny_qwen25_vl_config(tokenizer: Qwen2Tokenizer, hidden_size: int = 32, num_layers: int = 2,
                          vision_hidden_size: int = 32, vision_layers: int = 2) -> Qwen2_5_VLConfig:
    """The config of :func:`tiny_qwen25_vl`: a vision tower with one windowed and one
    full-attention block (Qwen2.5-VL's window attention, arXiv:2502.13923 section 2.1), and
    a grouped-query Qwen2 decoder with multimodal RoPE."""
    vision = dict(
        depth=vision_layers, hidden_size=vision_hidden_size, intermediate_size=2 * vision_hidden_size,
        num_heads=2, in_channels=3, patch_size=PATCH_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE,
        spatial_merge_size=MERGE_SIZE, out_hidden_size=hidden_size, tokens_per_second=2,
        # one merged token per window: the windowed blocks really attend locally
        window_size=PATCH_SIZE * MERGE_SIZE, fullatt_block_indexes=[vision_layers - 1])
    head_dim = 16
    text = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=hidden_size // head_dim, num_key_value_heads=1,
        head_dim=head_dim, max_position_embeddings=1024,
        # M-RoPE: the head's 8 rotary frequency pairs split over (time, height, width)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        vision_config=vision, text_config=text, image_token_id=ids(IMAGE_TOKEN), video_token_id=ids(VIDEO_TOKEN),
        vision_start_token_id=ids(VISION_START), vision_end_token_id=ids(VISION_END), tie_word_embeddings=False)


def tiny_qwen25_vl_parts(hidden_size: int = 32, num_layers: int = 2, vision_hidden_size: int = 32,
                         vision_layers: int = 2, seed: int = 0,
                         attn_implementation: str = "sdpa") -> QwenVLParts:
    """A Qwen2.5-VL-shaped model at tiny size, randomly initialised from ``seed``, and its
    processor. A 32x32 image is 4 tokens, a 4-frame 32x32 clip 8 (module docstring)."""
    processor = tiny_qwen25_vl_processor()
    tokenizer = processor.tokenizer
    config = tiny_qwen25_vl_config(tokenizer, hidden_size, num_layers, vision_hidden_size, vision_layers)
    model = seeded_model(Qwen2_5_VLForConditionalGeneration, config, tokenizer, seed, attn_implementation,
                         keep_bos=False)
    return QwenVLParts(model, processor)


def tiny_qwen25_vl(seed: int = 0, **kwargs) -> Qwen2_5_VLForConditionalGeneration:
    """The model of :func:`tiny_qwen25_vl_parts` (same keyword arguments)."""
    return tiny_qwen25_vl_parts(seed=seed, **kwargs).model


#: builder name -> function returning the model
BUILDERS: dict[str, Callable[..., Qwen2_5_VLForConditionalGeneration]] = {"tiny_qwen25_vl": tiny_qwen25_vl}
#: builder name -> function returning :class:`QwenVLParts` (model and processor)
PARTS_BUILDERS: dict[str, Callable[..., QwenVLParts]] = {"tiny_qwen25_vl": tiny_qwen25_vl_parts}
