"""POVID's image-distortion rejected answers (Zhou et al. 2024, "Aligning Modalities in Vision
Large Language Models via Preference Fine-tuning", arXiv:2402.11411, section 3.2).

The image is noised by the forward diffusion process at step ``k``, with the noise schedule of
Visual Contrastive Decoding's image distortion (Leng et al. 2023, arXiv:2311.16922)::

    beta_t  = sigmoid(linspace(-6, 6, T))_t * (5e-3 - 1e-5) + 1e-5,   t = 0 .. T-1
    abar_k  = prod_{t <= k} (1 - beta_t)
    x_k     = sqrt(abar_k) * x + sqrt(1 - abar_k) * eps,               eps ~ N(0, I)

applied to the processor's normalised pixel values. The chosen answer ``y`` is then
teacher-forced under the noised image: the rejected answer is the model's own prediction at
every position, ``y'_t = argmax_v p(v | x_k, q, y_<t)`` (or a sample at ``temperature``). Where
the noised image no longer supports the answer, the language prior takes over and the
predictions hallucinate, which is the dispreference POVID trains against.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from mmalign.errors import ConfigError
from mmalign.modalities.tokens.forward import unwrap
from mmalign.modalities.vision_language.augment import common

log = logging.getLogger("mmalign")


def noise_schedule(num_steps: int = 1000) -> Tensor:
    """``abar_k`` for ``k = 0 .. num_steps - 1`` (see the module docstring), float64."""
    betas = torch.sigmoid(torch.linspace(-6, 6, num_steps, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    return torch.cumprod(1 - betas, dim=0)


def noised(pixel_values: Tensor, step: int, generator: torch.Generator, num_steps: int = 1000) -> Tensor:
    """``sqrt(abar_k) * x + sqrt(1 - abar_k) * eps`` with ``eps`` drawn from ``generator``."""
    if not 0 <= step < num_steps:
        raise ConfigError(f"povid noise_step must lie in [0, {num_steps}), got {step}")
    abar = float(noise_schedule(num_steps)[step])
    eps = torch.randn(pixel_values.shape, generator=generator, dtype=torch.float32).to(pixel_values)
    return abar ** 0.5 * pixel_values + (1 - abar) ** 0.5 * eps


def teacher_forced(model: nn.Module, prompt_ids: Tensor, answer_ids: list[int], pixel_values: Tensor,
                   temperature: float = 0.0, generator: torch.Generator | None = None) -> list[int]:
    """The model's prediction at every position of ``answer_ids`` given the true prefix:
    one forward pass over ``[prompt | answer]``; position ``P - 1 + t`` predicts token ``t``."""
    inner = unwrap(model)
    answer = torch.tensor([answer_ids], device=prompt_ids.device)
    logits = inner(input_ids=torch.cat([prompt_ids, answer], dim=1), pixel_values=pixel_values.to(inner.dtype),
                   use_cache=False).logits[0].float()
    start = prompt_ids.shape[1] - 1
    logits = logits[start: start + len(answer_ids)]
    if temperature <= 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits / temperature, dim=-1).cpu()
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).tolist()


def povid(modality, model: nn.Module, records: Sequence[dict[str, Any]], *, noise_step: int = 500,
          num_steps: int = 1000, temperature: float = 0.0, seed: int = 0) -> list[dict[str, Any]]:
    """One POVID pair per record whose teacher-forced answer under the noised image differs
    from the chosen one: same prompt and images, ``rejected`` the model's predictions.

    The noise of each record comes from ``row_generator(seed, sample_id, 0, "povid")``, so a
    record gets the same rejected answer wherever it sits in ``records``. Rows without images
    are skipped (there is nothing to distort) and counted in the log.
    """
    processor = common.require_processor(modality, "povid")
    common.require_records(records, "povid")
    if temperature < 0:
        raise ConfigError(f"povid temperature must be >= 0 (0 is greedy), got {temperature}")
    device, out, skipped = common.device_of(model), [], Counter()
    with common.evaluating(model):
        for record, images, generator in common.with_images(records, seed, "povid", skipped):
            prompt_ids, pixels = common.prompt_inputs(processor, record["messages"], images, device)
            chosen_ids = common.response_ids(processor, record["chosen"])
            predicted = teacher_forced(model, prompt_ids, chosen_ids, noised(pixels, noise_step, generator, num_steps),
                                       temperature, generator)
            rejected = common.decode(processor, predicted)
            if rejected and not common.same_text(rejected, record["chosen"]):
                out.append(common.derived_record(record, "povid", messages=record["messages"], images=record["images"],
                                                 rejected=rejected, meta={"method": "povid", "noise_step": noise_step}))
    if skipped:
        log.info("povid: %d records without images skipped", skipped["povid"])
    return out
