"""The video evaluators (video_temporal, video_chair, video_pope): answer matching, accuracy per
kind and Wilson intervals against values worked out by hand, the checks of their data files,
and runs on the tiny Qwen2.5-VL over noise clips (by name from the registry, and through
``mmalign eval``'s ``run_eval``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign import config  # noqa: E402
from mmalign.errors import ConfigError, DataError  # noqa: E402
from mmalign.modalities.vision_language.evaluators import CAPTION_PROMPT, POPE_PROMPT  # noqa: E402
from mmalign.modalities.vision_language.hallucination import chair, pope_questions, pope_scores  # noqa: E402
from mmalign.modalities.vision_language.objects import load_vocabulary  # noqa: E402
from mmalign.intervals import wilson_interval  # noqa: E402
from mmalign.modalities.vision_language.video_evaluators import (  # noqa: E402
    VIDEO_CAPTION_PROMPT, VIDEO_POPE_PROMPT, is_correct, normalise, predicted_choice, read_annotated_clips,
    read_temporal_questions, temporal_prompt, temporal_scores)
from mmalign.registry import evaluators  # noqa: E402

from tests.video.clip_rows import tiny_modality, write_clips, write_video_rows  # noqa: E402

DIRECTIONS = ["left to right", "right to left"]
ORDERS = ["the dog, then the cat", "the cat, then the dog"]


# -- scoring by hand ----------------------------------------------------------------------
def test_normalise_lowers_and_drops_punctuation():
    assert normalise("  Left-to-RIGHT!\n") == "left to right"
    assert normalise("The dog, then: the cat.") == "the dog then the cat"


@pytest.mark.parametrize("answer, expected", [
    ("It moves from right to left.", "right to left"),
    ("Right-to-left, not left to right", "right to left"),      # the first one mentioned counts
    ("Not left to right but right to left", "left to right"),
    ("THE CAT, THEN THE DOG", "the cat, then the dog"),
    ("It does not move", None),
])
def test_predicted_choice_is_the_first_mentioned(answer, expected):
    assert predicted_choice(answer, DIRECTIONS + ORDERS) == expected


def test_predicted_choice_matches_whole_words_and_prefers_the_longer_choice_at_one_place():
    assert predicted_choice("leftover frames", ["left", "right"]) is None
    assert predicted_choice("from left to right", ["left", "left to right"]) == "left to right"
    assert predicted_choice("left, then right", ["right", "left"]) == "left"


def test_is_correct_with_and_without_choices():
    assert is_correct("Right to left.", "right to left", DIRECTIONS)
    assert not is_correct("Left to right, then right to left", "right to left", DIRECTIONS)
    assert not is_correct("I cannot tell", "right to left", DIRECTIONS)
    assert is_correct("Right to left!", "right to left")              # free answer: whole answer equals it
    assert not is_correct("It goes right to left", "right to left")


def test_wilson_interval_by_hand():
    """8/10, z = 1.96: centre (0.8 + 0.19207) / 1.38415 = 0.71674, half-width
    1.95996 / 1.38415 * sqrt(0.016 + 0.0096037) = 0.22658 -> (0.4902, 0.9433). At 0/n and n/n
    the interval is (0, z^2 / (n + z^2)) and (n / (n + z^2), 1)."""
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-12)
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0), abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_temporal_scores_by_hand():
    """Order: right, wrong (names no choice), right -> 2/3; direction: wrong (the first choice it
    names is the other one), right -> 1/2; one free question without a kind, right. Overall 4/6."""
    questions = [{"answer": ORDERS[0], "choices": ORDERS, "kind": "order"},
                 {"answer": ORDERS[1], "choices": ORDERS, "kind": "order"},
                 {"answer": ORDERS[1], "choices": ORDERS, "kind": "order"},
                 {"answer": DIRECTIONS[0], "choices": DIRECTIONS, "kind": "direction"},
                 {"answer": DIRECTIONS[1], "choices": DIRECTIONS, "kind": "direction"},
                 {"answer": "twice", "choices": None, "kind": None}]
    answers = ["The dog, then the cat.", "A dog.", "the cat then the dog", "Right to left, I think",
               "right to left", "Twice."]
    scores = temporal_scores(answers, questions)
    low, high = wilson_interval(4, 6)
    assert scores == pytest.approx({
        "accuracy": 4 / 6, "accuracy_low": low, "accuracy_high": high, "correct": 4.0, "count": 6.0,
        "order/accuracy": 2 / 3, "order/accuracy_low": wilson_interval(2, 3)[0],
        "order/accuracy_high": wilson_interval(2, 3)[1], "order/correct": 2.0, "order/count": 3.0,
        "direction/accuracy": 0.5, "direction/accuracy_low": wilson_interval(1, 2)[0],
        "direction/accuracy_high": wilson_interval(1, 2)[1], "direction/correct": 1.0, "direction/count": 2.0,
        "no_choice": 1.0}, abs=1e-12)


def test_video_prompts_are_the_image_prompts_about_a_video():
    assert CAPTION_PROMPT.replace("image", "video") == VIDEO_CAPTION_PROMPT == "Please describe this video in detail."
    assert VIDEO_POPE_PROMPT.format(object="dog") == POPE_PROMPT.format(object="dog").replace("image", "video")
    row = {"question": "Which way does it move?", "choices": DIRECTIONS}
    assert temporal_prompt(row) == ("Which way does it move?\nOptions:\n- left to right\n- right to left\n"
                                    "Answer with one of the options.")
    assert temporal_prompt(row, show_choices=False) == temporal_prompt({"question": row["question"]})


# -- data files ---------------------------------------------------------------------------
def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_clips(folder, 4)  # clip0.mp4 .. clip3.mp4: 8 frames of noise at 8 fps
    return folder


TEMPORAL_ROW = {"video": "clip0.mp4", "question": "Which way does the dot move?", "choices": DIRECTIONS,
                "answer": "Left to right.", "kind": "direction"}


@pytest.mark.parametrize("change, field, message", [
    ({"video": "nowhere.mp4"}, "video", "does not exist"),
    ({"answer": None}, "answer", "is missing"),
    ({"question": ""}, "question", "is empty"),
    ({"question": "<video> then <video>"}, "question", "2 video placeholders"),
    ({"answer": "up"}, "answer", "is not one of the choices"),
    ({"choices": ["left", "Left!"], "answer": "left"}, "choices", "two or more different choices"),
    ({"choices": ["left"], "answer": "left"}, "choices", "two or more different choices"),
    ({"choices": ["left", " ?"], "answer": "left"}, "choices", "list of non-empty texts"),
    ({"kind": ""}, "kind", "non-empty text"),
])
def test_bad_temporal_rows_name_file_row_and_field(clip_dir, change, field, message):
    data = write_jsonl(clip_dir / "temporal_bad.jsonl", [TEMPORAL_ROW, {**TEMPORAL_ROW, **change}])
    with pytest.raises(DataError, match=message) as err:
        read_temporal_questions(data)
    assert (err.value.file, err.value.row, err.value.field) == (data, 1, field)


def test_bad_annotated_rows_name_file_row_and_field(clip_dir):
    data = write_jsonl(clip_dir / "objects_bad.jsonl", [{"video": "clip0.mp4", "objects": ["dog"]},
                                                        {"video": "clip1.mp4", "objects": "dog"}])
    with pytest.raises(DataError, match="must be a list of object names") as err:
        read_annotated_clips(data)
    assert (err.value.file, err.value.row, err.value.field) == (data, 1, "objects")
    data = write_jsonl(clip_dir / "objects_missing.jsonl", [{"video": "clip0.mp4", "objects": ["dog"]},
                                                            {"video": "gone.mp4", "objects": ["dog"]}])
    with pytest.raises(DataError, match="gone.mp4' does not exist") as err:
        read_annotated_clips(data)
    assert (err.value.row, err.value.field) == (1, "video")


def test_a_clip_that_does_not_decode_is_named_by_its_row(clip_dir, tiny):
    (clip_dir / "broken.mp4").write_bytes(b"not a video at all")
    data = write_jsonl(clip_dir / "broken.jsonl", [{"video": "clip0.mp4", "objects": []},
                                                   {"video": "broken.mp4", "objects": ["dog"]}])
    modality, policy = tiny
    with pytest.raises(DataError, match="cannot decode") as err:
        evaluators.get("video_chair")(modality, policy, data)
    assert (err.value.file, err.value.row, err.value.field) == (data, 1, "video")


def test_options_and_missing_data_are_refused(clip_dir, tiny):
    modality, policy = tiny
    data = write_jsonl(clip_dir / "objects_ok.jsonl", [{"video": "clip0.mp4", "objects": ["dog"]}])
    with pytest.raises(ConfigError, match="setting must be one of"):
        evaluators.get("video_pope")(modality, policy, data, setting="hard")
    with pytest.raises(ConfigError, match="per_video must be a positive integer"):
        evaluators.get("video_pope")(modality, policy, data, per_video=0)
    with pytest.raises(ConfigError, match="needs a data file"):
        evaluators.get("video_temporal")(modality, policy, None)


# -- runs on the tiny Qwen2.5-VL ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return tiny_modality("tiny_qwen25_vl", max_new_tokens=6)


def greedy(modality, policy, data: str, prompts: list[tuple[str, str]]) -> list[str]:
    """Greedy answers to ``(prompt, clip path)`` pairs, the clips named by path."""
    folder = Path(data).parent
    return [a[0] for a in modality.sample(policy, [{"prompt": p, "videos": [str(folder / v)]} for p, v in prompts])]


def test_video_temporal_scores_the_model_answers(clip_dir, tiny):
    modality, policy = tiny
    rows = [{**TEMPORAL_ROW, "video": "clip0.mp4"},
            {"video": "clip1.mp4", "question": "<video>\nWhat comes first?", "choices": ORDERS,
             "answer": ORDERS[1], "kind": "order"},
            {"video": "clip2.mp4", "question": "What comes first?", "choices": ORDERS, "answer": ORDERS[0],
             "kind": "order"},
            {"video": "clip3.mp4", "question": "How many dots are there?", "answer": "two"}]
    data = write_jsonl(clip_dir / "temporal.jsonl", rows)
    result = evaluators.get("video_temporal")(modality, policy, data, seed=0)
    assert result["count"] == 4 and result["order/count"] == 2 and result["direction/count"] == 1
    for key in ("accuracy", "order/accuracy", "direction/accuracy"):
        assert 0.0 <= result[f"{key}_low"] <= result[key] <= result[f"{key}_high"] <= 1.0
    answers = greedy(modality, policy, data, [(temporal_prompt(r), r["video"]) for r in rows])
    assert result == pytest.approx(temporal_scores(answers, rows), abs=1e-12)


def test_video_chair_and_pope_score_the_model_answers(clip_dir, tiny):
    modality, policy = tiny
    objects = [["dog", "bench"], ["car"], ["person", "kite", "dog"], []]
    data = write_jsonl(clip_dir / "objects.jsonl", [{"video": f"clip{k}.mp4", "objects": o}
                                                    for k, o in enumerate(objects)])
    result = evaluators.get("video_chair")(modality, policy, data)
    captions = greedy(modality, policy, data, [(VIDEO_CAPTION_PROMPT, f"clip{k}.mp4") for k in range(4)])
    expected = chair(captions, objects, load_vocabulary())
    assert result == pytest.approx({"CHAIR_s": expected["CHAIR_s"], "CHAIR_i": expected["CHAIR_i"],
                                    "captions": 4.0}, abs=1e-12)

    pope = evaluators.get("video_pope")(modality, policy, data, setting="popular", per_video=2)
    assert set(pope) == {"accuracy", "precision", "recall", "f1", "yes_ratio", "questions"}
    assert pope["questions"] == 2 * (2 + 1 + 2)  # up to 2 present objects a clip and as many absent
    assert all(0.0 <= pope[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"))
    questions = pope_questions(objects, load_vocabulary(), "popular", 2, 0)
    answers = greedy(modality, policy, data, [(VIDEO_POPE_PROMPT.format(object=q["object"]), f"clip{q['index']}.mp4")
                                              for q in questions])
    expected = pope_scores(answers, [q["label"] for q in questions])
    assert pope == pytest.approx({**expected, "questions": 10.0}, abs=1e-12)


def test_run_eval_reports_the_video_evaluators(tmp_path, clip_dir):
    """``mmalign eval``'s ``run_eval`` finds the evaluators by name and reports their metrics,
    prefixed by name, beside the held-out preference metrics."""
    from mmalign.evaluate import run_eval

    train = write_video_rows(tmp_path / "data", 2)
    temporal = write_jsonl(clip_dir / "temporal_eval.jsonl", [TEMPORAL_ROW, {**TEMPORAL_ROW, "video": "clip1.mp4"}])
    recipe = config.from_dict({
        "model": {"modality": "vision_language", "builder": "tiny_qwen25_vl", "dtype": "float32",
                  "lora": {"r": 4, "alpha": 8},
                  "options": {"max_length": 256, "video_frames": 4, "max_new_tokens": 4}},
        "data": {"schema": "video_qa", "train": train},
        "objective": {"name": "dpo", "params": {"beta": 0.1}},
        "reference": {"strategy": "adapters_off"},
        "train": {"seed": 0, "batch_size": 2, "max_steps": 1, "mixed_precision": "no"},
        "eval": {"every": 0, "evaluators": ["video_temporal"], "data": temporal,
                 "options": {"video_temporal": {"show_choices": False}}},
        "logging": {"output_dir": str(tmp_path / "run"), "tensorboard": False, "progress": False},
    }, source="<video_eval>")
    results = run_eval(recipe)
    assert results["video_temporal/count"] == 2.0 and results["video_temporal/direction/count"] == 2.0
    assert 0.0 <= results["video_temporal/accuracy"] <= 1.0 and "eval/loss" in results
    assert json.loads((tmp_path / "run" / "eval" / "eval.json").read_text()) == results
