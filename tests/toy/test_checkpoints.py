"""The shipped base checkpoints: recorded hashes, loading through the modalities, sampling."""
from __future__ import annotations

import pytest

from mmalign.modality import ModelSpec
from mmalign.registry import modalities
from mmalign.toy import checkpoints, detect, shapes

pytestmark = pytest.mark.skipif(not checkpoints.HASHES.is_file(), reason="assets/toy/SHA256SUMS is not shipped")


@pytest.fixture(autouse=True)
def _offline_one_thread(offline_one_thread):
    """Every test here: offline, one thread (tests/toy/conftest.py)."""


def test_files_match_recorded_hashes():
    recorded = checkpoints.recorded_hashes()
    assert any(name.startswith("diffusion/unet/") for name in recorded)
    assert any(name.startswith("llava/") and name.endswith(".safetensors") for name in recorded)
    assert checkpoints.mismatches() == []


def test_hash_check_catches_a_changed_file(tmp_path):
    for name in checkpoints.MODELS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "w.bin").write_bytes(b"abc")
    checkpoints.write_hashes(tmp_path)
    assert checkpoints.mismatches(tmp_path) == []
    (tmp_path / "llava" / "w.bin").write_bytes(b"abd")
    assert checkpoints.mismatches(tmp_path) == ["llava/w.bin"]


def test_diffusion_model_loads_and_draws_the_named_colour_and_shape():
    """Eight prompts naming colour and shape; the base model gets most of them right (the
    pretraining check measured about 9 in 10; 6 of 8 leaves room for sampling luck)."""
    modality = modalities.get("image_diffusion")(resolution=shapes.SIZE, sample_steps=10, guidance_scale=4.0)
    unet = modality.load_policy(ModelSpec(path=str(checkpoints.DIFFUSION)))
    prompts = [f"a {c} {s}" for c, s in zip(["red", "green", "blue", "yellow"] * 2, shapes.SHAPES * 3)]
    groups = modality.sample(unet, prompts, 1, seeds=[shapes.seed_of("tune", i) for i in range(len(prompts))])
    assert [len(g) for g in groups] == [1] * 8 and groups[0][0].size == (shapes.SIZE, shapes.SIZE)
    images = [g[0] for g in groups]
    right = 0
    for image, prompt in zip(images, prompts):
        found = detect.main_object(image)
        right += found is not None and found.name == prompt[2:]
    assert right >= 6


def test_llava_loads_and_captions_with_world_objects():
    from mmalign.modalities.vision_language.objects import load_vocabulary
    from mmalign.toy.pretrain_llava import CAPTION_PROMPT
    from mmalign.toy.rewards import VOCABULARY

    modality = modalities.get("vision_language")(max_new_tokens=24)
    model = modality.load_policy(ModelSpec(path=str(checkpoints.LLAVA)))
    scenes = [shapes.paired_scene(shapes.seed_of("tune", i)) for i in range(6)]
    answers = modality.sample(model, [{"prompt": CAPTION_PROMPT, "images": [shapes.render(s)]} for s in scenes], 1,
                              seeds=[shapes.seed_of("tune", i) for i in range(len(scenes))])
    vocabulary = load_vocabulary(VOCABULARY)
    named = [set(vocabulary.mentions(a[0])) for a in answers]
    truth = [{o.name for o in s} for s in scenes]
    assert all(named)  # every caption names at least one object of the world
    recall = sum(len(n & t) for n, t in zip(named, truth)) / sum(len(t) for t in truth)
    assert recall >= 0.6  # it sees most of what is there (the pretraining check measured more)
