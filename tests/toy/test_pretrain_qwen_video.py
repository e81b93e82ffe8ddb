"""The toy video-language model: its tokenizer covers the world's words, a few seconds of
pretraining write a folder the vision_language modality loads and samples, and the shipped
checkpoint (when present) shows the planted direction prior on held-out clips."""
from __future__ import annotations

import json

import pytest

from mmalign import assets
from mmalign.modality import ModelSpec
from mmalign.registry import modalities
from mmalign.toy import shapes_video as sv

pytest.importorskip("av")
pytest.importorskip("decord")

from mmalign.toy import pretrain_qwen_video as pretrain  # noqa: E402

CHECKPOINT = assets.path("toy") / "qwen_video"


@pytest.fixture(autouse=True)
def _offline_one_thread(offline_one_thread):
    """Every test here: offline, one thread (tests/toy/conftest.py)."""


def test_every_word_of_the_world_is_one_token():
    tokenizer = pretrain.video_tokenizer()
    scene = sv.MovingScene((sv.Mover("triangle", "yellow", "small", (2, 2, 10, 10), "down", 10),
                            sv.Mover("square", "green", "small", (20, 20, 28, 28), "right", 10)), 8)
    caption = sv.caption(scene)
    assert len(tokenizer.tokenize(caption)) == len(caption.split())
    for direction in sv.DIRECTIONS:
        assert len(tokenizer.tokenize(direction)) == 1
    assert tokenizer.eos_token == "<|im_end|>"


def test_short_pretraining_writes_a_folder_the_modality_loads_and_samples(tmp_path):
    out = tmp_path / "model"
    pretrain.main(["--out", str(out), "--minutes", "0.02", "--batch-size", "4", "--pool", "8", "--fresh", "2",
                   "--hidden-size", "32", "--layers", "1", "--vision-hidden-size", "32", "--vision-layers", "2"])
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    clips = pretrain.write_clips(tmp_path / "clips", "tune", 2)
    modality = modalities.get("vision_language")(max_new_tokens=4)
    model = modality.load_policy(ModelSpec(path=str(out)))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    answers = modality.sample(model, [{"prompt": sv.direction_question(c["scene"].objects[0]), "videos": [c["video"]]}
                                      for c in clips], 1, [0, 1])
    assert [len(a) for a in answers] == [1, 1] and all(isinstance(a[0], str) for a in answers)
    measured = pretrain.measure(modality, model, clips)
    assert measured["clips"] == 2 and 0 <= measured["direction_accuracy"] <= 1


def test_measure_scores_answers_against_the_annotations(tmp_path):
    """A stand-in modality that answers the favoured direction and names the objects: right on
    objects moving with the prior, wrong on those moving against it, captions' objects right."""
    clips = [{"video": f"{i}.mp4", "scene": sv.moving_scene(i), "index": i} for i in range(30)]
    by_video = {c["video"]: c["scene"] for c in clips}

    class Prior:
        def sample(self, model, prompts, n, seeds):
            out = []
            for p in prompts:
                scene = by_video[p["videos"][0]]
                if p["prompt"] == sv.CAPTION_PROMPT:
                    out.append([sv.caption(scene, [m.prior for m in scene.objects])])
                else:
                    mover = next(m for m in scene.objects if m.name in p["prompt"])
                    out.append([mover.prior])
            return out

    measured = pretrain.measure(Prior(), None, clips)
    assert measured["with_prior_accuracy"] == 1.0 and measured["against_prior_accuracy"] == 0.0
    assert measured["against_prior_says_prior"] == 1.0 and measured["caption_object_accuracy"] == 1.0
    assert measured["answer_words"] == 1.0
    low, high = measured["direction_accuracy_ci95"]
    assert low <= measured["direction_accuracy"] <= high


@pytest.mark.skipif(not (CHECKPOINT / "config.json").is_file(), reason="assets/toy/qwen_video is not shipped")
def test_shipped_checkpoint_sees_objects_and_follows_the_planted_prior(tmp_path):
    """On 24 held-out clips: captions name the right objects, directions moving with the prior
    are answered right, and objects moving against it are mostly said to move the favoured way
    (``pretrain_qwen_video --measure 400`` reports the same on 400 clips)."""
    measured = pretrain.measure_folder(str(CHECKPOINT), tmp_path, "heldout", 24)
    assert measured["caption_object_accuracy"] >= 0.5      # 0.71 measured on 400 clips
    assert measured["with_prior_accuracy"] >= 0.8           # 1.0 on 400 clips
    assert measured["against_prior_says_prior"] >= 0.6      # 1.0 on 400 clips: the prior wins
    assert measured["against_prior_accuracy"] <= 0.3        # 0.0 on 400 clips
    assert measured["answer_words"] == pytest.approx(1.0, abs=0.2)


@pytest.mark.skipif(not (CHECKPOINT / "config.json").is_file(), reason="assets/toy/qwen_video is not shipped")
def test_dpo_task_runs_end_to_end_on_a_handful_of_clips(tmp_path):
    """The DPO measurement of :mod:`mmalign.toy.task_video`, shortened to two steps: pairs on
    ``prefs`` clips, training on the vision_language modality, before / after on ``tune`` clips."""
    from mmalign.toy import task, task_video

    results = task.run(task_video, tmp_path, task_video.Settings(), steps=2, progress=False, split="tune")
    metrics = {r["metric"]: r for r in results}
    assert {"direction_accuracy", "against_prior_accuracy", "caption_object_accuracy", "answer_words"} <= set(metrics)
    assert all(0 <= metrics[m]["after"] <= 1 for m in ("direction_accuracy", "caption_object_accuracy"))
    low, high = metrics["direction_accuracy"]["change_ci95"]
    assert -1 <= low <= high <= 1
    rows = [json.loads(line) for line in (tmp_path / task_video.NAME / "pairs.jsonl").read_text().splitlines()]
    assert rows and all(r["chosen"] != r["rejected"] for r in rows)
    assert (tmp_path / task_video.NAME / "after.png").is_file()
