"""The ``diffusion_win_rate`` evaluator: tuned against base on the same seeds, scored by
``clip_score`` on a tiny random open_clip model; the result equals the fraction worked out from
the two score lists, ties counting one half."""
from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig

from mmalign.errors import DataError
from mmalign.models import diffusion as builders
from mmalign.registry import evaluators, rewards
from mmalign.train.adapters import adapters_disabled
from mmalign.train.adapters import inject

from diffusion_helpers import diffusion_recipe, make_modality, pickapic_rows, register_tiny_clip, write_parquet

PROMPTS = ["a red cube", "two blue balls", "a green cone", "a red cube", "a yellow ring"]


@pytest.fixture(scope="module")
def clip_name(tmp_path_factory) -> str:
    return register_tiny_clip(tmp_path_factory.mktemp("open_clip"))


@pytest.fixture
def scorer(clip_name):
    torch.manual_seed(0)  # open_clip initialises a model without weights from the global generator
    return rewards.get("clip_score")(model=clip_name, scale=100.0)


@pytest.fixture
def prompts_file(tmp_path) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return str(path)


def flat(per_prompt: list[list]) -> list:
    return [image for images in per_prompt for image in images]


def test_chunks_do_not_change_the_images(monkeypatch):
    """Prompt i is sampled from seed + i whichever call it falls in: chunks of 2 prompts give
    the images one call of all prompts gives."""
    from mmalign.modalities.image_diffusion import evaluators as module

    modality, policy = make_modality(sample_steps=2)
    whole = module.sample_chunks(modality, policy, PROMPTS, 1, 7)
    monkeypatch.setattr(module, "CHUNK", 2)
    chunked = module.sample_chunks(modality, policy, PROMPTS, 1, 7)
    assert [len(row) for row in chunked] == [1] * len(PROMPTS)
    assert [list(r[0].getdata()) for r in chunked] == [list(r[0].getdata()) for r in whole]
    # the repeated prompt (0 and 3) has seeds 7 and 10: its two samples differ
    assert list(whole[0][0].getdata()) != list(whole[3][0].getdata())


def by_hand(tuned: list[float], base: list[float]) -> float:
    """Wins count 1, ties 1/2, losses 0, over the pairs of images drawn from the same seed."""
    points = [1.0 if t > b else 0.5 if t == b else 0.0 for t, b in zip(tuned, base)]
    return sum(points) / len(points)


def test_lora_policy_against_adapters_off(scorer, prompts_file):
    modality, policy = make_modality(sample_steps=2)
    inject(policy, LoraConfig(r=4, lora_alpha=8, target_modules=list(modality.lora_target_modules)))
    with torch.no_grad():  # a LoRA starts at B = 0; random B stands for a trained adapter
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    fn = evaluators.get("diffusion_win_rate")
    result = fn(modality, policy, prompts_file, seed=3, scorer=scorer, n=2)
    # the repeated prompt counts once: 4 prompts x 2 images, prompt i sampled from seed 3 + i
    distinct = list(dict.fromkeys(PROMPTS))
    prompts = [p for p in distinct for _ in range(2)]
    tuned = scorer.score(flat(modality.sample(policy, distinct, 2, [3, 4, 5, 6])), prompts).tolist()
    with adapters_disabled(policy) as base:
        untuned = scorer.score(flat(modality.sample(base, distinct, 2, [3, 4, 5, 6])), prompts).tolist()
    assert tuned != untuned  # the adapters change the images, so the comparison means something
    assert result["images"] == 8.0
    assert result["win_rate"] == pytest.approx(by_hand(tuned, untuned), abs=1e-12)
    assert result["score_tuned"] == pytest.approx(sum(tuned) / 8, abs=1e-5)
    assert result["score_base"] == pytest.approx(sum(untuned) / 8, abs=1e-5)


def test_identical_models_tie_everywhere(scorer, prompts_file):
    """A freshly added LoRA is zero (B = 0): tuned and base draw the very same images from the
    same seeds, every pair ties and the win rate is exactly 1/2."""
    modality, policy = make_modality(sample_steps=2)
    inject(policy, LoraConfig(r=4, lora_alpha=8, target_modules=list(modality.lora_target_modules)))
    result = evaluators.get("diffusion_win_rate")(modality, policy, prompts_file, seed=0, scorer=scorer, limit=2)
    assert result["images"] == 2.0 and result["win_rate"] == 0.5
    assert result["score_tuned"] == result["score_base"]


def test_full_finetune_against_the_reloaded_base(scorer, tmp_path):
    """Without adapters the base is reloaded from the spec the policy came from; prompts are
    read from a Pick-a-Pic file's caption column."""
    modality, policy = make_modality(sample_steps=2)
    with torch.no_grad():
        policy.conv_out.bias.add_(0.3)  # stands for a trained change
    data = write_parquet(tmp_path / "pairs.parquet", pickapic_rows(3))
    result = evaluators.get("diffusion_win_rate")(modality, policy, data, seed=1, scorer=scorer)
    captions = ["cube 0", "cube 1", "cube 2"]
    tuned = scorer.score(flat(modality.sample(policy, captions, 1, 1)), captions).tolist()
    untuned = scorer.score(flat(modality.sample(builders.tiny_sd15(), captions, 1, 1)), captions).tolist()
    assert tuned != untuned
    assert result["win_rate"] == pytest.approx(by_hand(tuned, untuned), abs=1e-12)
    assert result["score_base"] == pytest.approx(sum(untuned) / 3, abs=1e-5)


def test_a_row_without_a_prompt_is_named(scorer, tmp_path):
    modality, policy = make_modality(sample_steps=2)
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "a cube"}) + "\n" + json.dumps({"text": "a ball"}) + "\n")
    with pytest.raises(DataError, match=r"prompts.jsonl, row 1, field 'prompt': expected a non-empty prompt"):
        evaluators.get("diffusion_win_rate")(modality, policy, str(path), scorer=scorer)


def test_runs_from_a_recipe_through_mmalign_eval(clip_name, prompts_file, tmp_path):
    """``mmalign eval`` builds the scorer by name from eval.options; before training the LoRA
    is zero, so tuned and base tie on every prompt: 1/2."""
    from mmalign.evaluate import run_eval

    train_file = write_parquet(tmp_path / "train.parquet", pickapic_rows(2))
    recipe = diffusion_recipe(tmp_path / "run", train_file, eval={
        "evaluators": ["diffusion_win_rate"], "data": prompts_file,
        "options": {"diffusion_win_rate": {"scorer": "clip_score", "limit": 2,
                                           "scorer_options": {"model": clip_name}}}})
    results = run_eval(recipe)
    assert results["diffusion_win_rate/win_rate"] == 0.5 and results["diffusion_win_rate/images"] == 2.0
