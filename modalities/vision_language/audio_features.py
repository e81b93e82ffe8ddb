"""Projected features of sounds for an audio-language model whose class has no
``get_audio_features`` (Qwen2-Audio, Chu et al. 2024, arXiv:2407.10759, in transformers 5):
the same computation its forward runs inline, so the packed path can write them into the
``<|AUDIO|>`` slots itself.

Each sound's log-mel features (padded to the extractor's chunk, ``feature_attention_mask``
marking the real frames) go through the Whisper-style encoder (a stride-2 convolution, then
average pooling by 2) and the projector; of each sound's ``out_len = (L - 1) // 2 + 1 -> (x - 2) // 2 + 1``
outputs only the first ``out_len`` are real, and those, concatenated in order, are what the
processor wrote that many ``<|AUDIO|>`` tokens for.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def qwen2_audio_features(base: nn.Module, input_features: Tensor, feature_attention_mask: Tensor) -> Tensor:
    """``[sum of real outputs, H]`` for a ``Qwen2AudioModel`` ``base``."""
    from transformers.masking_utils import create_bidirectional_mask

    tower = base.audio_tower
    input_features = input_features.to(tower.device, tower.dtype)
    mask = feature_attention_mask.to(tower.device)
    feature_lengths, output_lengths = tower._get_feat_extract_output_lengths(mask.sum(-1))
    rows, _, mel_frames = input_features.shape
    encoder_frames = (mel_frames - 2) // 2 + 1  # after the stride-2 convolution
    real = torch.arange(encoder_frames, device=mask.device)[None, :] < feature_lengths[:, None]
    attention = create_bidirectional_mask(config=tower.config, attention_mask=real.long(),
                                          inputs_embeds=torch.zeros(rows, encoder_frames, 1, dtype=tower.dtype,
                                                                    device=tower.device))
    states = tower(input_features, attention_mask=attention).last_hidden_state
    features = base.multi_modal_projector(states)
    kept = torch.arange(features.shape[1], device=features.device)[None, :] < output_lengths.to(features.device)[:, None]
    return features[kept]
