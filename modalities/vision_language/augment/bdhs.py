"""BDHS, bias-driven hallucination sampling (Amirloo et al. 2024, "Understanding Alignment in
Multimodal LLMs: A Comprehensive Study", arXiv:2407.02477, section 4).

A model that sees too little of the image answers from its language prior: that is the
hallucination BDHS samples. Per record:

1. *Mask in embedding space*: the image features are scattered into the image-token slots as
   usual, then a fraction ``mask_fraction`` of those slots (drawn per record) is set to zero,
   so the decoder reads nothing from them.
2. *Reference guidance*: the chosen answer is cut after sentence ``k`` (drawn per record, at
   least one sentence left to rewrite); the model continues the kept prefix greedily. The
   rejected answer is ``prefix + continuation``: it shares the chosen answer's start, so the
   pair differs where the biased model drifted.
3. *Similarity filter*: the continuation is kept only when its similarity to the part of the
   chosen answer it replaces is below ``similarity_threshold``: a continuation that says the
   same thing is no hallucination.

The paper measures similarity with a sentence-embedding model; here it is the cosine of
lower-cased word-count vectors (:func:`word_cosine`), local and deterministic.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from mmalign.errors import ConfigError
from mmalign.modalities.tokens.forward import unwrap
from mmalign.modalities.vision_language.augment import common
from mmalign.modalities.vision_language.vision import embed

log = logging.getLogger("mmalign")


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` (the mark stays with its sentence)."""
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def word_cosine(a: str, b: str) -> float:
    """``sum_w c_a(w) c_b(w) / (|c_a| |c_b|)`` over lower-cased word counts ``c``; 0 when
    either text has no word."""
    ca, cb = Counter(re.findall(r"[a-z0-9']+", a.lower())), Counter(re.findall(r"[a-z0-9']+", b.lower()))
    norm = math.sqrt(sum(v * v for v in ca.values())) * math.sqrt(sum(v * v for v in cb.values()))
    return sum(ca[w] * cb[w] for w in ca) / norm if norm else 0.0


def masked_embeddings(model: nn.Module, input_ids: Tensor, pixel_values: Tensor, fraction: float,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Input embeddings with ``round(fraction * n)`` of the ``n`` image-token slots zeroed,
    and the bool ``[L]`` mask of the zeroed positions."""
    inner = unwrap(model)
    embeds = embed(inner, input_ids, pixel_values)
    slots = (input_ids[0] == inner.config.image_token_id).nonzero().flatten().cpu()
    chosen = torch.randperm(len(slots), generator=generator)[: round(fraction * len(slots))]
    masked = torch.zeros(input_ids.shape[1], dtype=torch.bool)
    masked[slots[chosen]] = True
    return embeds.masked_fill(masked.to(embeds.device)[None, :, None], 0.0), masked


def continue_greedily(model: nn.Module, embeds: Tensor, max_new_tokens: int, pad_id: int) -> list[int]:
    """Greedy continuation of a sequence given as embeddings (new tokens only)."""
    inner = unwrap(model)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    out = inner.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad_id)
    return out[0].tolist()


def bdhs(modality, model: nn.Module, records: Sequence[dict[str, Any]], *, mask_fraction: float = 0.5,
         similarity_threshold: float = 0.5, max_new_tokens: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """One BDHS pair per record whose biased continuation passes the similarity filter (see
    the module docstring). Randomness (masked slots, cut point) comes from
    ``row_generator(seed, sample_id, 0, "bdhs")``; rows without images are skipped and counted."""
    processor = common.require_processor(modality, "bdhs")
    common.require_records(records, "bdhs")
    if not 0 <= mask_fraction <= 1:
        raise ConfigError(f"bdhs mask_fraction must lie in [0, 1], got {mask_fraction}")
    if not 0 <= similarity_threshold <= 1:
        raise ConfigError(f"bdhs similarity_threshold must lie in [0, 1], got {similarity_threshold}")
    device, out, skipped, similar = common.device_of(model), [], Counter(), 0
    with common.evaluating(model):
        for record, images, generator in common.with_images(records, seed, "bdhs", skipped):
            result = _biased_answer(model, processor, record, images, device, generator,
                                    mask_fraction, max_new_tokens)
            if result["similarity"] >= similarity_threshold or not result["continuation"]:
                similar += 1
                continue
            out.append(common.derived_record(record, "bdhs", messages=record["messages"], images=record["images"],
                                             rejected=result["rejected"],
                                             meta={"method": "bdhs", "mask_fraction": mask_fraction,
                                                   "cut": result["cut"], "similarity": result["similarity"]}))
    log.info("bdhs: %d pairs from %d records (%d without images, %d continuations too similar to "
             "the chosen answer)", len(out), len(records), skipped["bdhs"], similar)
    return out


def _biased_answer(model, processor, record, images, device, generator, fraction, max_new_tokens) -> dict:
    """The continuation of a chosen-answer prefix under masked image tokens, and its
    similarity to the part of the chosen answer it replaces."""
    parts = sentences(record["chosen"])
    cut = int(torch.randint(0, len(parts), (), generator=generator))
    prefix, replaced = " ".join(parts[:cut]), " ".join(parts[cut:])
    prompt_ids, pixels = common.prompt_inputs(processor, record["messages"], images, device)
    ids = torch.cat([prompt_ids, torch.tensor([common.text_ids(processor, prefix)], dtype=torch.long,
                                              device=device)], dim=1)
    embeds, _ = masked_embeddings(model, ids, pixels, fraction, generator)
    continuation = common.decode(processor, continue_greedily(model, embeds, max_new_tokens,
                                                       processor.tokenizer.pad_token_id))
    rejected = f"{prefix} {continuation}".strip()
    return {"cut": cut, "continuation": continuation, "rejected": rejected,
            "similarity": word_cosine(continuation, replaced)}
