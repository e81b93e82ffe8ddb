"""Qwen2-Audio (Chu et al., "Qwen2-Audio Technical Report", arXiv:2407.10759) at tiny size: the
real ``Qwen2AudioForConditionalGeneration`` and ``Qwen2AudioProcessor`` (a
``WhisperFeatureExtractor`` and Qwen's tokenizer), randomly initialised from configs, with the
byte-level BPE of :mod:`mmalign.models.qwen_vl`. Nothing is downloaded.

The feature extractor pads (or cuts) every clip to ``chunk_length`` seconds and turns it into a
log-mel spectrogram of one frame per ``hop_length`` samples; ``feature_attention_mask`` marks the
clip's own ``L = ceil(samples / hop_length)`` frames. The Whisper-style encoder halves the frames
with a stride-2 convolution and again with average pooling, so a clip becomes

    tokens = ((L - 1) // 2 + 1 - 2) // 2 + 1

``<|AUDIO|>`` tokens (the processor and the model compute the same number from the mask). The
tiny sizes here (16 kHz, hop 160, chunk 2 s -> 200 frames, 16 mel bins, 100 encoder positions):

* a 1 s clip: L = 100 frames -> 50 -> **25 tokens**;
* a 0.5 s clip: L = 50 -> 25 -> **12 tokens**;
* a 2 s clip (or anything longer, which the feature extractor truncates): L = 200 -> 100 ->
  **50 tokens**.

A clip should make at least 2 tokens (L >= 7 frames, i.e. more than 0.06 s): the model takes a
batch with no two adjacent ``<|AUDIO|>`` tokens for text the processor has not expanded (an old
input format) and merges the audio into it by another path.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from transformers import (
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2Tokenizer,
    WhisperFeatureExtractor,
)

from mmalign.models.qwen_vl import DEFAULT_SYSTEM, IM_END, IM_START, PAD_TOKEN, tiny_bpe
from mmalign.models.seeded import seeded_model

AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS = "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"
#: Qwen2-Audio's special tokens, in the order of their ids (after the BPE pieces, as in Qwen)
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS)

#: the feature extractor's rate, hop, window and chunk (Whisper's, but 2 s instead of 30 s)
SAMPLING_RATE, HOP_LENGTH, N_FFT, CHUNK_SECONDS = 16_000, 160, 400, 2
#: log-mel bins: the feature extractor's ``feature_size`` and the encoder's ``num_mel_bins``
NUM_MEL_BINS = 16
#: spectrogram frames of one chunk (every clip is padded to these) and encoder positions: the
#: stride-2 convolution halves the frames, and the encoder requires exactly this many
NUM_FRAMES = CHUNK_SECONDS * SAMPLING_RATE // HOP_LENGTH
MAX_SOURCE_POSITIONS = NUM_FRAMES // 2

# Qwen2-Audio's conversation format (ChatML, as its processor's default template): a default
# system turn, each turn as "<|im_start|>role\n...<|im_end|>\n", each audio item as a numbered
# "Audio k: <|audio_bos|><|AUDIO|><|audio_eos|>\n" line whose one <|AUDIO|> the processor
# expands to the clip's token count.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen2AudioParts(NamedTuple):
    """A Qwen2-Audio model and the processor that prepares its inputs."""

    model: Qwen2AudioForConditionalGeneration
    processor: Qwen2AudioProcessor


def audio_tokens(num_samples: int, hop_length: int = HOP_LENGTH, chunk_seconds: int = CHUNK_SECONDS,
                 sampling_rate: int = SAMPLING_RATE) -> int:
    """``<|AUDIO|>`` tokens for a clip of ``num_samples`` samples (module docstring)."""
    frames = -(-min(num_samples, chunk_seconds * sampling_rate) // hop_length)
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


def tiny_qwen2_audio_tokenizer() -> Qwen2Tokenizer:
    """Qwen's tokenizer class over :func:`mmalign.models.qwen_vl.tiny_bpe`, with Qwen2-Audio's
    special tokens; ``<|im_end|>`` ends a turn and is the EOS, as in Qwen2-Audio-Instruct."""
    vocab, merges = tiny_bpe()
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token=IM_END, pad_token=PAD_TOKEN,
        extra_special_tokens={"audio_token": AUDIO_TOKEN, "audio_bos_token": AUDIO_BOS,
                              "audio_eos_token": AUDIO_EOS, "im_start_token": IM_START})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_qwen2_audio_feature_extractor() -> WhisperFeatureExtractor:
    """Whisper's log-mel feature extractor with :data:`NUM_MEL_BINS` bins and 2 s chunks."""
    return WhisperFeatureExtractor(feature_size=NUM_MEL_BINS, sampling_rate=SAMPLING_RATE, hop_length=HOP_LENGTH,
                                   chunk_length=CHUNK_SECONDS, n_fft=N_FFT, return_attention_mask=True)


def tiny_qwen2_audio_processor() -> Qwen2AudioProcessor:
    """Qwen2-Audio's processor with :func:`tiny_qwen2_audio_tokenizer` and
    :func:`tiny_qwen2_audio_feature_extractor` (token counts in the module docstring).

    Call it as ``processor(text=..., audio=[clip, ...], sampling_rate=16000, padding=True,
    return_tensors="pt")`` with mono float32 numpy clips, one per ``<|AUDIO|>`` in the texts, in
    order; it returns ``input_ids``, ``attention_mask``, ``input_features`` ``[clips, mel bins,
    frames]`` and ``feature_attention_mask`` ``[clips, frames]``."""
    return Qwen2AudioProcessor(feature_extractor=tiny_qwen2_audio_feature_extractor(),
                               tokenizer=tiny_qwen2_audio_tokenizer(), chat_template=CHAT_TEMPLATE)


def tiny_qwen2_audio_config(tokenizer: Qwen2Tokenizer, hidden_size: int = 32, num_layers: int = 2,
                            audio_hidden_size: int = 32, audio_layers: int = 2) -> Qwen2AudioConfig:
    """The config of :func:`tiny_qwen2_audio`: a Whisper-style audio encoder over
    :data:`NUM_MEL_BINS` bins and :data:`MAX_SOURCE_POSITIONS` positions, a linear projector, and
    a grouped-query Qwen2 decoder (4 query heads, 2 key/value heads)."""
    audio = dict(
        model_type="qwen2_audio_encoder", num_mel_bins=NUM_MEL_BINS, encoder_layers=audio_layers,
        encoder_attention_heads=2, encoder_ffn_dim=2 * audio_hidden_size, d_model=audio_hidden_size,
        max_source_positions=MAX_SOURCE_POSITIONS)
    head_dim = hidden_size // 4
    text = dict(
        model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
        max_position_embeddings=1024, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False)
    return Qwen2AudioConfig(audio_config=audio, text_config=text,
                            audio_token_index=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN))


def tiny_qwen2_audio_parts(hidden_size: int = 32, num_layers: int = 2, audio_hidden_size: int = 32,
                           audio_layers: int = 2, seed: int = 0, attn_implementation: str = "sdpa") -> Qwen2AudioParts:
    """A Qwen2-Audio-shaped model at tiny size, randomly initialised from ``seed``, and its
    processor. A 1 s clip is 25 tokens, a 0.5 s clip 12 (module docstring)."""
    processor = tiny_qwen2_audio_processor()
    tokenizer = processor.tokenizer
    config = tiny_qwen2_audio_config(tokenizer, hidden_size, num_layers, audio_hidden_size, audio_layers)
    model = seeded_model(Qwen2AudioForConditionalGeneration, config, tokenizer, seed, attn_implementation,
                         keep_bos=False)
    return Qwen2AudioParts(model, processor)


def tiny_qwen2_audio(seed: int = 0, **kwargs) -> Qwen2AudioForConditionalGeneration:
    """The model of :func:`tiny_qwen2_audio_parts` (same keyword arguments)."""
    return tiny_qwen2_audio_parts(seed=seed, **kwargs).model


#: builder name -> function returning the model
BUILDERS: dict[str, Callable[..., Qwen2AudioForConditionalGeneration]] = {"tiny_qwen2_audio": tiny_qwen2_audio}
#: builder name -> function returning :class:`Qwen2AudioParts` (model and processor)
PARTS_BUILDERS: dict[str, Callable[..., Qwen2AudioParts]] = {"tiny_qwen2_audio": tiny_qwen2_audio_parts}
