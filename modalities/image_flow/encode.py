"""The frozen work of SD3 / FLUX: text conditioning by the pipeline's own ``encode_prompt``
and the 16-channel VAE posterior.

SD3 / SD3.5 (``StableDiffusion3Pipeline``): ``prompt_embeds`` ``[B, 77 + L, D_T5]`` is the
penultimate hidden states of CLIP-L and CLIP-G, concatenated on the feature axis and
zero-padded to the T5 width, followed by T5's ``L`` token embeddings; ``pooled`` ``[B, 2048]``
both CLIP projections. FLUX (``FluxPipeline``): ``prompt_embeds`` ``[B, L, D_T5]`` from T5 and
``pooled`` ``[B, 768]`` CLIP's pooled output; its text ids are zeros and built at the forward.
Calling the pipeline's method keeps training on exactly the conditioning the pipeline samples
with. T5's embeddings are the largest frozen cost (``L`` x 4096 values per caption), which is
why the cache takes a storage dtype (``cache_dtype``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from mmalign.models.flow import FlowParts

from mmalign.modalities.image_diffusion.encode import Encoders, vae_posterior

#: the pipelines' default T5 length
DEFAULT_T5_TOKENS = {"sd3": 256, "flux": 512}


def t5_tokenizer(parts: FlowParts):
    return parts.pipeline.tokenizer_3 if parts.kind == "sd3" else parts.pipeline.tokenizer_2


def t5_length(parts: FlowParts, max_sequence_length: int | None) -> int:
    """``max_sequence_length``, or the pipeline's default capped at what the T5 tokenizer takes."""
    if max_sequence_length is not None:
        return max_sequence_length
    return min(DEFAULT_T5_TOKENS[parts.kind], t5_tokenizer(parts).model_max_length)


@torch.no_grad()
def encode_prompts(parts: FlowParts, prompts: list[str], max_sequence_length: int) -> dict[str, Tensor]:
    """``{"prompt_embeds", "pooled"}`` of ``prompts``, as the pipeline conditions on them."""
    pipe = parts.pipeline
    if parts.kind == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                                  do_classifier_free_guidance=False,
                                                  max_sequence_length=max_sequence_length)
    else:
        embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=max_sequence_length)
    return {"prompt_embeds": embeds, "pooled": pooled}


def is_truncated(parts: FlowParts, max_sequence_length: int, prompt: str) -> bool:
    """Whether T5 (the longest context) cuts ``prompt`` (its ``</s>`` included)."""
    return len(t5_tokenizer(parts)(prompt, truncation=False, verbose=False).input_ids) > max_sequence_length


def flow_encoders(parts: FlowParts, max_sequence_length: int) -> Encoders:
    """The :class:`~mmalign.modalities.image_diffusion.encode.Encoders` of an SD3 / FLUX model:
    the empty prompt is the encoded ``""`` (neither pipeline zeroes it)."""
    encode = lambda prompts: encode_prompts(parts, prompts, max_sequence_length)  # noqa: E731
    return Encoders(prompts=encode, empty=lambda: encode([""]), latents=lambda px: vae_posterior(parts.vae, px),
                    modules=parts.frozen_modules(),
                    config={"kind": parts.kind, "max_sequence_length": max_sequence_length})
