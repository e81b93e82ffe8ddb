"""Generating answers from a vision-language model, for evaluation and online data."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from torch import nn

from mmalign.modalities.tokens.responses import adds_bos
from mmalign.data.io import RowRef
from mmalign.modalities.tokens.forward import device_of, unwrap
from mmalign.modalities.tokens.sampling import evaluating, new_tokens
from mmalign.modalities.vision_language.encoding import to_messages
from mmalign.modalities.vision_language.images import open_image
from mmalign.modalities.vision_language.media import Sampling, open_audio, open_clip, processor_kwargs


def generate(model: nn.Module, processor, prompts: Sequence[dict[str, Any]], *, n: int, seeds: Sequence[int],
             max_new_tokens: int = 64, repairs: Counter | None = None,
             sampling: Sampling = Sampling()) -> list[list[str]]:
    """``n`` answers for each ``{"prompt": text or messages, "images": [...], "videos": [...],
    "audios": [...]}`` (clips and sounds read by ``sampling``).

    ``n == 1`` decodes greedily (what CHAIR and POPE report); ``n > 1`` samples, prompt ``i``
    from ``seeds[i]`` alone (:func:`~mmalign.modalities.tokens.sampling.new_tokens`).
    """
    with evaluating(model):
        return [_answers(unwrap(model), processor, item, index, n, seed, max_new_tokens, repairs, sampling)
                for index, (item, seed) in enumerate(zip(prompts, seeds))]


def _answers(model: nn.Module, processor, item: dict[str, Any], index: int, n: int, seed: int,
             max_new_tokens: int, repairs: Counter | None, sampling: Sampling) -> list[str]:
    where = RowRef(str(item.get("source", "prompts")), index)
    images = [open_image(img, where, "images", repairs) for img in item.get("images") or []]
    clips = [open_clip(video, where, "videos", sampling) for video in item.get("videos") or []]
    audios = [open_audio(audio, where, "audios", sampling) for audio in item.get("audios") or []]
    messages = to_messages(item["prompt"], len(images), where, n_videos=len(clips), n_audios=len(audios))
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], return_tensors="pt", add_special_tokens=adds_bos(processor.tokenizer, text),
                       **processor_kwargs(images, clips, audios, sampling.audio_rate)).to(device_of(model))
    for key in ("pixel_values", "pixel_values_videos", "input_features"):
        if key in inputs:
            inputs[key] = inputs[key].to(model.dtype)
    out = new_tokens(model, dict(inputs), n=n, seed=seed, do_sample=n > 1, max_new_tokens=max_new_tokens,
                     pad_id=processor.tokenizer.pad_token_id)
    return [a.strip() for a in processor.batch_decode(out, skip_special_tokens=True)]
