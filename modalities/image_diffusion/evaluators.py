"""Evaluators of the image-diffusion modality, registered in ``mmalign.registry.evaluators``.

``diffusion_win_rate``: the share of prompts on which the tuned model's image beats the base
model's image under a reward scorer, both sampled from the same seeds (so the two images of
a comparison start from the same initial noise). This is the automatic counterpart of the
human "win rate against the base model" reported by Wallace et al. 2023 (Diffusion-DPO,
arXiv:2311.12908, sec. 6), scored there by PickScore, HPS v2, CLIP and aesthetics.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from torch import Tensor, nn

from mmalign.errors import ConfigError, DataError
from mmalign.modality import normalize_seeds
from mmalign.registry import register_evaluator, rewards
from mmalign.train import adapters

#: prompts sampled per pipeline call (prompt ``i`` is sampled from ``seed + i`` in any chunk)
CHUNK = 8
PROMPT_COLUMNS = ("prompt", "caption")


@register_evaluator("diffusion_win_rate")
def diffusion_win_rate(modality, model: nn.Module, data: str | None, *, seed: int = 0,
                       scorer: str | Any = "clip_score", scorer_options: Mapping[str, Any] | None = None,
                       n: int = 1, limit: int | None = None) -> dict[str, float]:
    """Win rate of ``model`` over its base on the prompts of ``data``.

    ``data``: a local preference file of the modality's schemas (its ``prompt`` / ``caption``
    column is read) or a jsonl / parquet / csv of prompts; repeated prompts count once.
    ``scorer``: a registered reward scorer name, built with ``scorer_options``, or an object
    with ``score(images, prompts) -> Tensor``. ``n`` images per prompt, ``limit`` prompts at most.
    The base is the same model with its LoRA adapters disabled, or, for a full fine-tune, the
    UNet reloaded from the spec the policy was loaded with.

    With scores ``s_i`` (tuned) and ``b_i`` (base) of image pairs ``i = 1..N``:
    ``win_rate = (1 / N) * sum_i ([s_i > b_i] + 0.5 * [s_i = b_i])``.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"eval.options.diffusion_win_rate.n must be a positive integer, got {n!r}")
    prompts = read_prompts(data, limit)
    judge = build_scorer(scorer, dict(scorer_options or {}))
    tuned = _flat(sample_chunks(modality, model, prompts, n, seed))
    with base_model(modality, model) as base:
        untuned = _flat(sample_chunks(modality, base, prompts, n, seed))
    repeated = [p for p in prompts for _ in range(n)]
    tuned_scores = judge.score(tuned, repeated).detach().float().cpu()
    base_scores = judge.score(untuned, repeated).detach().float().cpu()
    return {"win_rate": win_rate(tuned_scores, base_scores), "score_tuned": tuned_scores.mean().item(),
            "score_base": base_scores.mean().item(), "images": float(len(repeated))}


def _flat(per_prompt: list[list]) -> list:
    return [image for images in per_prompt for image in images]


def win_rate(tuned: Tensor, base: Tensor) -> float:
    """``mean([tuned > base] + 0.5 * [tuned == base])``: a tie is half a win."""
    return ((tuned > base).double() + 0.5 * (tuned == base).double()).mean().item()


def read_prompts(data: str | None, limit: int | None = None) -> list[str]:
    """The distinct prompts of a local table, in file order; errors name file, row and field."""
    from mmalign.data.io import read_rows

    if not data:
        raise ConfigError("diffusion_win_rate needs a data file of prompts: set eval.data (or data.eval)")
    if not Path(data).is_file():
        raise DataError("no such file", file=str(data), hint="Give a local jsonl / parquet / csv with a 'prompt' "
                        "or 'caption' column")
    prompts: dict[str, None] = {}
    for index, row in read_rows(data):
        column = next((c for c in PROMPT_COLUMNS if c in row), None)
        value = row.get(column) if column else None
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"expected a non-empty prompt text, got {value!r}", file=str(data), row=index,
                            field=column or "prompt", hint="Give every row a 'prompt' (or 'caption') string")
        prompts.setdefault(value)
    out = list(prompts)
    return out[:limit] if limit else out


def build_scorer(scorer: str | Any, options: dict[str, Any]) -> Any:
    """A registered reward scorer built with ``options``, or ``scorer`` itself if it scores."""
    if hasattr(scorer, "score"):
        return scorer
    cls = rewards.get(scorer)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"eval.options.diffusion_win_rate.scorer_options for reward '{scorer}': {exc}") from None


def sample_chunks(modality, model: nn.Module, prompts: Sequence[str], n: int, seed: int) -> list[list]:
    """``n`` images per prompt, one list per prompt, in calls of :data:`CHUNK` prompts; prompt
    ``i`` is sampled from ``seed + i`` whatever the chunking, so two models given the same
    prompts and seed start every image from the same noise."""
    seeds = normalize_seeds(seed, len(prompts))
    images: list[list] = []
    for start in range(0, len(prompts), CHUNK):
        images += modality.sample(model, list(prompts[start:start + CHUNK]), n, seeds[start:start + CHUNK])
    return images


@contextlib.contextmanager
def base_model(modality, model: nn.Module) -> Iterator[nn.Module]:
    """The model before tuning: adapters off for a LoRA policy (no second UNet), else the UNet
    reloaded through the modality from the spec its policy was loaded with."""
    if adapters.has_adapters(model):
        with adapters.adapters_disabled(model) as base:
            yield base
        return
    spec = getattr(modality, "spec", None)
    if spec is None:
        raise ConfigError("diffusion_win_rate compares with the base model, but the modality has not loaded "
                          "one (call load_policy first)")
    yield modality.load_unet(spec).to(next(model.parameters()).device).eval()
