"""MIA-DPO (Liu et al. 2024, "MIA-DPO: Multi-Image Augmented Direct Preference Optimization
for Large Vision-Language Models", arXiv:2410.17637, sections 3.2-3.3).

A single-image record becomes multi-image prompts (:mod:`.layouts`: sequence, grid collage,
pic-in-pic) in which the question is about the record's image, the *target*, among distractor
images taken from other records. The model answers; an answer drawn from the distractors is a
multi-image hallucination, and MIA-DPO detects it from attention rather than from labels.

*Attention share.* With eager attention and ``output_attentions=True`` over
``[prompt | answer]``, let ``a^{l,h}_{q,k}`` be layer ``l``, head ``h``'s attention from query
``q`` to key ``k``, ``Q`` the positions that predict the answer tokens, ``T`` the target's image
tokens and ``I`` all image tokens. Then::

    share = mean_{l,h,q in Q} sum_{k in T} a_{q,k}  /  mean_{l,h,q in Q} sum_{k in I} a_{q,k}

the fraction of the answer's attention to images that lands on the target. Under attention
spread evenly over image tokens it is ``|T| / |I|`` (``1 / n`` for ``n`` images in sequence);
an answer whose share is below ``threshold * |T| / |I|`` is marked hallucinated and becomes the
rejected answer, the record's chosen answer the chosen one. The paper's own threshold values
are not reproduced: ``threshold`` scales the even-spread share, so one number serves every
layout and image count. The paper's post-selection (perplexity, length ratio, edit distance)
is not applied here.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from mmalign.errors import ConfigError
from mmalign.modalities.tokens.forward import unwrap
from mmalign.modalities.vision_language.augment import common
from mmalign.modalities.vision_language.augment import layouts as _layouts
from mmalign.modalities.vision_language.encoding import to_messages
from mmalign.modality import row_generator

log = logging.getLogger("mmalign")


def attention_share(attentions: Sequence[Tensor], queries: Tensor, target: Tensor, images: Tensor) -> float:
    """``share`` of the module docstring from per-layer ``[1, H, L, L]`` attentions and index
    tensors of the query, target-token and image-token positions."""
    to_target = torch.stack([a[0][:, queries][..., target].sum(-1).mean() for a in attentions]).mean()
    to_images = torch.stack([a[0][:, queries][..., images].sum(-1).mean() for a in attentions]).mean()
    return float(to_target / to_images)


def target_tokens(input_ids: Tensor, image_token_id: int, layout: _layouts.Layout) -> tuple[Tensor, Tensor]:
    """Positions of the target's image tokens and of all image tokens in ``input_ids [L]``.

    Each image gives the same number of tokens, a square grid of patches in row-major order
    (LLaVA's ``default`` feature selection drops CLS); a patch belongs to the target when its
    centre lies in the layout's target box."""
    images = (input_ids == image_token_id).nonzero().flatten()
    per_image = len(images) // len(layout.images)
    side = math.isqrt(per_image)
    if side * side != per_image or per_image * len(layout.images) != len(images):
        raise ConfigError(f"mia_dpo needs each image to give a square grid of tokens; got {len(images)} image "
                          f"tokens for {len(layout.images)} images")
    left, top, right, bottom = layout.target_box
    block = images[layout.target_image * per_image: (layout.target_image + 1) * per_image]
    inside = [i for i in range(per_image)
              if left <= (i % side + 0.5) / side < right and top <= (i // side + 0.5) / side < bottom]
    return block[inside], images


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """The model with eager attention (SDPA returns no attention weights), switched back after."""
    inner = unwrap(model)
    previous = inner.config._attn_implementation
    inner.set_attn_implementation("eager")
    try:
        yield inner
    finally:
        inner.set_attn_implementation(previous)


def answer_share(model: nn.Module, processor, messages: list[dict], layout: _layouts.Layout,
                 answer: str, device) -> tuple[float, float]:
    """``(share, even_share)`` of ``answer`` under ``layout`` (see the module docstring)."""
    prompt_ids, pixels = common.prompt_inputs(processor, messages, layout.images, device)
    answer_ids = torch.tensor([common.response_ids(processor, answer)], device=device)
    ids = torch.cat([prompt_ids, answer_ids], dim=1)
    with eager_attention(model) as inner, torch.no_grad():
        out = inner(input_ids=ids, pixel_values=pixels.to(inner.dtype), output_attentions=True, use_cache=False)
    target, images = target_tokens(ids[0].cpu(), inner.config.image_token_id, layout)
    start = prompt_ids.shape[1] - 1  # the last prompt position predicts the first answer token
    queries = torch.arange(start, start + answer_ids.shape[1])
    return attention_share(out.attentions, queries, target, images), len(target) / len(images)


def mia_dpo(modality, model: nn.Module, records: Sequence[dict[str, Any]], *,
            layouts: Sequence[str] = _layouts.LAYOUTS, n_images: int = 3, threshold: float = 1.0,
            canvas: int = 336, inset: float = 0.5, seed: int = 0) -> list[dict[str, Any]]:
    """For each single-image record and each layout, a multi-image prompt; the model's greedy
    answer becomes a rejected answer when its attention share on the target is below
    ``threshold`` times the even share. ``n_images`` counts the target (sequence and grid; a
    pic-in-pic always has one distractor). Distractors, target place and inset place come from
    ``row_generator(seed, sample_id, 0, "mia_dpo/<layout>")``."""
    processor = common.require_processor(modality, "mia_dpo")
    common.require_records(records, "mia_dpo")
    _check_options(layouts, n_images, threshold, inset)
    pool = [(r["sample_id"], r) for r in records if len(r["images"]) == 1]
    if len(pool) < 2:
        raise ConfigError("mia_dpo needs at least two single-image records (the others give the distractors)")
    device, out, kept = common.device_of(model), [], 0
    with common.evaluating(model):
        for sample_id, record in pool:
            target = common.open_images(record)[0]
            others = [r for sid, r in pool if sid != sample_id]
            for name in layouts:
                generator = row_generator(seed, sample_id, 0, f"mia_dpo/{name}")
                layout = _build(name, target, record, others, generator, n_images, canvas, inset)
                messages = to_messages(layout.prompt, len(layout.images), common.where(record))
                answer = modality.sample(model, [{"prompt": messages, "images": layout.images,
                                                  "source": record["file"]}], 1, seeds=[seed])[0][0]
                if not answer or common.same_text(answer, record["chosen"]):
                    continue
                share, even = answer_share(model, processor, messages, layout, answer, device)
                kept += 1
                if share < threshold * even:
                    out.append(common.derived_record(record, f"mia_dpo/{name}", messages=messages, images=layout.images,
                                              rejected=answer, meta={"method": "mia_dpo", "layout": name,
                                                                     "share": share, "even_share": even}))
    log.info("mia_dpo: %d pairs from %d scored answers of %d single-image records", len(out), kept, len(pool))
    return out


def _build(name: str, target, record, others, generator, n_images: int, canvas: int, inset: float):
    wanted = 1 if name == "pic_in_pic" else min(n_images - 1, len(others))
    picks = torch.randperm(len(others), generator=generator)[:wanted].tolist()
    distractors = [common.open_images(others[i])[0] for i in picks]
    question = _question(record)
    if name == "sequence":
        return _layouts.sequence(target, distractors, question, generator)
    if name == "grid":
        return _layouts.grid(target, distractors, question, generator, canvas)
    return _layouts.pic_in_pic(target, distractors[0], question, generator, canvas, inset)


def _question(record: dict[str, Any]) -> str:
    """The text of the record's first user turn (its image placeholders dropped)."""
    user = next(m for m in record["messages"] if m["role"] == "user")
    return " ".join(item["text"] for item in user["content"] if item["type"] == "text")


def _check_options(layouts: Sequence[str], n_images: int, threshold: float, inset: float) -> None:
    unknown = sorted(set(layouts) - set(_layouts.LAYOUTS))
    if unknown or not layouts:
        raise ConfigError(f"mia_dpo layouts must be a non-empty list of {', '.join(_layouts.LAYOUTS)}; "
                          f"got {list(layouts)!r}")
    if not isinstance(n_images, int) or n_images < 2:
        raise ConfigError(f"mia_dpo n_images must be an integer >= 2 (the target and a distractor), got {n_images!r}")
    if threshold < 0:
        raise ConfigError(f"mia_dpo threshold must be >= 0, got {threshold}")
    if not 0 < inset < 1:
        raise ConfigError(f"mia_dpo inset must lie in (0, 1), got {inset}")
