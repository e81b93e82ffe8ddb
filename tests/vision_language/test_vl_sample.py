"""The ``sample`` hook: prompt i's answers depend only on its prompt and seeds[i]; a token
model has no start sample to continue from."""
from __future__ import annotations

import pytest

from mmalign.errors import ConfigError


def test_sampled_answers_depend_on_prompt_and_its_seed_only(modality_with_policy, image_dir):
    modality, policy = modality_with_policy(max_new_tokens=6)
    prompts = [{"prompt": "What is in the image?", "images": [str(image_dir / f"img{k}.png")]} for k in (0, 1)]
    both = modality.sample(policy, prompts, 3, [5, 9])
    assert len(both) == 2 and all(len(answers) == 3 for answers in both)
    assert modality.sample(policy, prompts[1:], 3, [9]) == both[1:]  # not on the other prompt
    assert modality.sample(policy, prompts, 3, 5) == both[:1] + modality.sample(policy, prompts[1:], 3, [6])
    assert modality.sample(policy, prompts, 1, [0, 0]) == modality.sample(policy, prompts, 1, [7, 3])  # greedy


def test_init_and_strength_are_refused(modality_with_policy, image_dir):
    modality, policy = modality_with_policy()
    prompt = {"prompt": "What is in the image?", "images": [str(image_dir / "img0.png")]}
    with pytest.raises(ConfigError, match="vision_language modality cannot continue from a start sample"):
        modality.sample(policy, [prompt], 1, [0], init=["a dog"], strength=0.5)
    with pytest.raises(ConfigError, match="one seed per prompt"):
        modality.sample(policy, [prompt], 1, [0, 1])
