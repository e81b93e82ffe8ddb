"""The sound-hallucination evaluators (audio_pope, audio_chair, audio_event_recall): event
matching through the synonym table, CHAIR / recall / POPE against values worked out by hand,
whole evaluator runs on scripted answers, the checks of their data files, and runs on the tiny
Qwen2-Audio over four sounds (by name from the registry, and through ``mmalign eval``'s
``run_eval``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign import config
from mmalign.errors import ConfigError, DataError
from mmalign.intervals import wilson_interval
from mmalign.modalities.audio_language import AudioLanguageModality
from mmalign.modalities.audio_language.evaluators import (CAPTION_PROMPT, POPE_PROMPT, event_chair, event_recall,
                                                          read_annotated_sounds)
from mmalign.modalities.audio_language.events import EVENTS, built_in, event_vocabulary, mentioned_events
from mmalign.modalities.vision_language.hallucination import chair, coverage, pope_questions, pope_scores
from mmalign.modalities.vision_language.media import Sampling
from mmalign.modality import ModelSpec
from mmalign.registry import evaluators

from tests.audio_language.sound_rows import write_audio_rows, write_sounds

EVENTS_TABLE = built_in()


# -- the event vocabulary -----------------------------------------------------------------
@pytest.mark.parametrize("caption, mentioned", [
    ("A dog is barking while a man speaks.", ["dog", "speech"]),             # "barking" is the dog again
    ("Birds are singing and a bird chirps.", ["bird"]),                      # sing / chirp dropped beside a bird
    ("A woman sings; then a chirp.", ["music", "chirp"]),                    # no bird: singing is music
    ("A rising tone, a tone, then a click and a burst of noise.", ["chirp", "tone", "click", "noise burst"]),
    ("A car engine revs as traffic passes and a horn honks.", ["engine", "car"]),
    ("Background noise, sound waves and a phone.", []),                      # bare "noise" names no event
    ("Sirens wail; church bells ring; rain falls; thunder.", ["siren", "bell", "rain", "thunder"]),
])
def test_event_mentions_by_hand(caption, mentioned):
    assert mentioned_events(caption, EVENTS_TABLE) == mentioned


def test_annotations_may_name_an_event_by_a_synonym():
    assert [EVENTS_TABLE.canonical(n) for n in ("Dog", "barking", "noise bursts", "Birdsong", "car horn")] == [
        "dog", "dog", "noise burst", "bird", "car"]
    assert not EVENTS_TABLE.known("unicorn") and EVENTS_TABLE.known("woof")


def test_every_event_has_a_question_and_no_form_belongs_to_two_events():
    assert EVENTS_TABLE.classes == sorted(EVENTS)
    assert all(EVENTS_TABLE.sounds.get(e) for e in EVENTS)
    question = POPE_PROMPT.format(sound=EVENTS_TABLE.sound("dog"))
    assert question == "Is there a dog barking in the audio? Answer yes or no."
    with pytest.raises(ValueError, match="'bark' is a form of both 'dog' and 'tree'"):
        built_in({**EVENTS, "tree": ("bark",)})


def test_a_vocabulary_file_with_question_phrases(tmp_path):
    path = tmp_path / "events.json"
    path.write_text(json.dumps({"classes": {"owl": ["hoot", "hooting"], "goat": ["bleat"]},
                                "sounds": {"goat": "a goat bleating"}}))
    events = event_vocabulary(path)
    assert mentioned_events("An owl hoots; goats bleat", events) == ["owl", "goat"]
    assert (events.sound("owl"), events.sound("goat")) == ("an owl", "a goat bleating")
    path.write_text(json.dumps({"classes": {"owl": "hoot"}}))
    with pytest.raises(ConfigError, match="needs 'classes'"):
        event_vocabulary(path)
    with pytest.raises(ConfigError, match="not found"):
        event_vocabulary(tmp_path / "nowhere.json")


# -- scoring by hand ----------------------------------------------------------------------
CAPTIONS = ["A dog barks while a man is talking, then a bell rings.",
            "Birds are singing; a bird chirps.",
            "A rising tone and static.",
            "A car engine idles in the rain. The car honks."]
ANNOTATIONS = [["dog", "speech"], ["bird"], ["tone", "click"], ["car", "engine", "rain", "wind"]]


def test_event_chair_by_hand():
    """Events, each once per caption: (0) dog, speech, bell: bell hallucinated; (1) bird;
    (2) chirp ("rising tone" is the sweep, not the tone), noise burst ("static"): both
    hallucinated; (3) engine ("car engine"), rain, car: none. CHAIR_i = (1 + 0 + 2 + 0) /
    (3 + 1 + 2 + 3) = 1/3; CHAIR_s = 2/4."""
    result = event_chair(CAPTIONS, ANNOTATIONS, EVENTS_TABLE)
    assert [c["mentioned"] for c in result["captions"]] == [
        ["dog", "speech", "bell"], ["bird"], ["chirp", "noise burst"], ["engine", "rain", "car"]]
    assert [c["hallucinated"] for c in result["captions"]] == [["bell"], [], ["chirp", "noise burst"], []]
    assert (result["mentioned"], result["hallucinated"]) == (9, 3)
    assert result["CHAIR_i"] == pytest.approx(1 / 3, abs=1e-12)
    assert result["CHAIR_s"] == pytest.approx(0.5, abs=1e-12)


def test_event_chair_counts_an_event_once_per_caption_where_image_chair_counts_words():
    """Caption 0 names the dog twice (dog, barks) and the bell twice (bell, rings): CHAIR over
    words gives 2 hallucinated of 5, over events 1 of 3."""
    assert chair(CAPTIONS[:1], ANNOTATIONS[:1], EVENTS_TABLE)["CHAIR_i"] == pytest.approx(2 / 5, abs=1e-12)
    assert event_chair(CAPTIONS[:1], ANNOTATIONS[:1], EVENTS_TABLE)["CHAIR_i"] == pytest.approx(1 / 3, abs=1e-12)


def test_event_recall_by_hand():
    """Annotated 2 + 1 + 2 + 4 = 9 events; mentioned dog, speech; bird; none; car, engine, rain:
    6 of 9. Coverage (the mean per sound): (1 + 1 + 0 + 3/4) / 4 = 0.6875."""
    low, high = wilson_interval(6, 9)
    assert event_recall(CAPTIONS, ANNOTATIONS, EVENTS_TABLE) == pytest.approx(
        {"recall": 2 / 3, "recall_low": low, "recall_high": high, "recalled": 6.0, "events": 9.0}, abs=1e-12)
    assert coverage(CAPTIONS, ANNOTATIONS, EVENTS_TABLE) == pytest.approx(0.6875, abs=1e-12)
    assert event_recall(["silence"], [[]], EVENTS_TABLE)["recall"] == 0.0


POPE_SOUNDS = [["dog", "speech"], ["dog", "music"], ["rain", "thunder"]]


def _negatives(questions, index):
    return [q["object"] for q in questions if q["index"] == index and not q["label"]]


def test_pope_negatives_over_events_by_hand():
    """Popular: frequencies dog 2, the rest 1 or 0; absent events most frequent first, ties by
    name: sound 0 -> music, rain; sound 1 -> rain, speech; sound 2 -> dog, music. Adversarial:
    co-occurrences dog-speech, dog-music, rain-thunder once each: sound 0 -> music (beside the
    dog), then aircraft (first by name); sound 1 -> speech, aircraft; sound 2 -> aircraft, applause."""
    popular = pope_questions(POPE_SOUNDS, EVENTS_TABLE, "popular", 2)
    assert [_negatives(popular, k) for k in range(3)] == [["music", "rain"], ["rain", "speech"], ["dog", "music"]]
    adversarial = pope_questions(POPE_SOUNDS, EVENTS_TABLE, "adversarial", 2)
    assert [_negatives(adversarial, k) for k in range(3)] == [["music", "aircraft"], ["speech", "aircraft"],
                                                              ["aircraft", "applause"]]


# -- whole runs on scripted answers -------------------------------------------------------
class Scripted:
    """A stand-in modality: the ``k``-th ``sample`` call (one per sound) answers each prompt
    with ``script[k](prompt)``; the calls are kept."""

    def __init__(self, script):
        self.script, self.calls, self.sampling = script, [], Sampling()

    def sample(self, model, items, n=1, seeds=0):
        self.calls.append((list(items), list(seeds)))
        return [[self.script[len(self.calls) - 1](item["prompt"])] for item in items]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def sound_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sounds")
    write_sounds(folder, 4)  # sound0.wav .. sound3.wav: tones with noise, 1, 0.5, 0.75, 1 s at 16 kHz
    return folder


def test_audio_chair_and_recall_on_scripted_captions(sound_dir):
    rows = [{"audio": f"sound{k}.wav", "events": e} for k, e in enumerate(ANNOTATIONS)]
    rows[1]["prompt"] = "<audio>\nWhat do you hear?"
    data = write_jsonl(sound_dir / "events.jsonl", rows)
    modality = Scripted([lambda prompt, c=c: c for c in CAPTIONS])
    result = evaluators.get("audio_chair")(modality, None, data, seed=3)
    low, high = wilson_interval(6, 9)
    assert result == pytest.approx({"CHAIR_s": 0.5, "CHAIR_i": 1 / 3, "mentioned": 9.0, "hallucinated": 3.0,
                                    "captions": 4.0, "recall": 2 / 3, "recall_low": low, "recall_high": high,
                                    "recalled": 6.0, "events": 9.0}, abs=1e-12)
    # one call per sound, read once at 16 kHz; the row's own prompt replaces the default one
    assert [[item["prompt"] for item in items] for items, _ in modality.calls] == [
        [CAPTION_PROMPT], ["<audio>\nWhat do you hear?"], [CAPTION_PROMPT], [CAPTION_PROMPT]]
    assert [items[0]["audios"][0].shape[0] for items, _ in modality.calls] == [16000, 8000, 12000, 16000]
    assert [seeds for _, seeds in modality.calls] == [[3], [4], [5], [6]]

    recall = evaluators.get("audio_event_recall")(Scripted([lambda p, c=c: c for c in CAPTIONS]), None, data)
    assert recall == pytest.approx({"recall": 2 / 3, "recall_low": low, "recall_high": high, "recalled": 6.0,
                                    "events": 9.0, "coverage": 0.6875}, abs=1e-12)


def test_audio_pope_on_scripted_answers(sound_dir):
    """Popular questions (negatives above). The script hears {dog, music} in sound 0,
    {dog, music, rain} in sound 1 and nothing in sound 2. Sound 0: dog yes (TP), speech no (FN),
    music yes (FP), rain no (TN); sound 1: dog, music yes (2 TP), rain yes (FP), speech no (TN);
    sound 2: rain, thunder no (2 FN), dog, music no (2 TN). TP 3, FP 2, FN 3, TN 4: accuracy
    7/12, precision 3/5, recall 3/6, F1 2 * 0.6 * 0.5 / 1.1 = 6/11, yes-ratio 5/12."""
    data = write_jsonl(sound_dir / "pope.jsonl", [{"audio": f"sound{k}.wav", "events": e}
                                                  for k, e in enumerate(POPE_SOUNDS)])

    def hears(*events):
        phrases = [EVENTS_TABLE.sound(e) for e in events]
        return lambda prompt: "Yes, there is." if any(f" {p} " in prompt for p in phrases) else "No, there is not."

    modality = Scripted([hears("dog", "music"), hears("dog", "music", "rain"), hears()])
    result = evaluators.get("audio_pope")(modality, None, data, setting="popular", per_sound=2)
    assert result == pytest.approx({"accuracy": 7 / 12, "precision": 3 / 5, "recall": 0.5, "f1": 6 / 11,
                                    "yes_ratio": 5 / 12, "questions": 12.0}, abs=1e-12)
    negatives = [items[2:] for items, _ in modality.calls]  # each sound's 2 positives, then its 2 negatives
    assert [item["prompt"] for item in negatives[0]] == ["Is there music in the audio? Answer yes or no.",
                                                          "Is there rain in the audio? Answer yes or no."]
    assert [seeds for _, seeds in modality.calls] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


# -- data files ---------------------------------------------------------------------------
GOOD_ROW = {"audio": "sound0.wav", "events": ["dog", "speech"]}


@pytest.mark.parametrize("change, field, message", [
    ({"audio": "nowhere.wav"}, "audio", "nowhere.wav' does not exist"),
    ({"audio": None}, "audio", "is missing"),
    ({"events": "dog"}, "events", "must be a list of sound-event names"),
    ({"events": None}, "events", "got missing"),
    ({"events": ["dog", "unicorn"]}, "events", "'unicorn' is not an event of the vocabulary"),
    ({"events": ["dog", ""]}, "events", "must be a list of sound-event names"),
    ({"prompt": "<audio> then <audio>"}, "prompt", "2 audio placeholders"),
])
def test_bad_rows_name_file_row_and_field(sound_dir, change, field, message):
    data = write_jsonl(sound_dir / "bad.jsonl", [GOOD_ROW, {**GOOD_ROW, **change}])
    with pytest.raises(DataError, match=message) as err:
        read_annotated_sounds(data, EVENTS_TABLE)
    assert (err.value.file, err.value.row, err.value.field) == (data, 1, field)


def test_a_sound_that_does_not_decode_is_named_by_its_row(sound_dir):
    (sound_dir / "broken.wav").write_bytes(b"not a sound at all")
    data = write_jsonl(sound_dir / "broken.jsonl", [GOOD_ROW, {"audio": "broken.wav", "events": ["dog"]}])
    modality = Scripted([lambda prompt: "A dog."] * 2)
    with pytest.raises(DataError, match="could not be decoded") as err:
        evaluators.get("audio_chair")(modality, None, data)
    assert (err.value.file, err.value.row, err.value.field) == (data, 1, "audio")
    assert len(modality.calls) == 1  # row 0 was asked; nothing after the broken row


def test_options_and_missing_data_are_refused(sound_dir):
    data = write_jsonl(sound_dir / "ok.jsonl", [GOOD_ROW])
    pope = evaluators.get("audio_pope")
    with pytest.raises(ConfigError, match="setting must be one of"):
        pope(Scripted([]), None, data, setting="hard")
    for bad in (0, True, 1.5):
        with pytest.raises(ConfigError, match="per_sound must be a positive integer"):
            pope(Scripted([]), None, data, per_sound=bad)
    with pytest.raises(ConfigError, match="needs a data file"):
        evaluators.get("audio_event_recall")(Scripted([]), None, None)
    with pytest.raises(ConfigError, match="event vocabulary .* not found"):
        evaluators.get("audio_chair")(Scripted([]), None, data, vocabulary=str(sound_dir / "none.json"))
    empty = write_jsonl(sound_dir / "no_events.jsonl", [{**GOOD_ROW, "events": []}])
    with pytest.raises(DataError, match="POPE has nothing to ask") as err:
        pope(Scripted([]), None, empty)
    assert (err.value.file, err.value.field) == (empty, "events")


# -- runs on the tiny Qwen2-Audio ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    modality = AudioLanguageModality(max_length=256, max_new_tokens=4)
    return modality, modality.load_policy(ModelSpec(builder="tiny_qwen2_audio"))


def greedy(modality, policy, folder: Path, prompts: list[tuple[str, str]]) -> list[str]:
    """Greedy answers to ``(prompt, sound file)`` pairs, each sound named by its path."""
    return [a[0] for a in modality.sample(policy, [{"prompt": p, "audios": [str(folder / s)]} for p, s in prompts])]


def test_evaluators_by_name_score_the_tiny_models_answers(sound_dir, tiny):
    modality, policy = tiny
    events = [["dog", "bell"], ["bird"], ["car", "engine", "speech"], []]
    data = write_jsonl(sound_dir / "tiny.jsonl", [{"audio": f"sound{k}.wav", "events": e}
                                                  for k, e in enumerate(events)])
    result = evaluators.get("audio_chair")(modality, policy, data)
    captions = greedy(modality, policy, sound_dir, [(CAPTION_PROMPT, f"sound{k}.wav") for k in range(4)])
    expected = event_chair(captions, events, EVENTS_TABLE)
    assert result == pytest.approx({"CHAIR_s": expected["CHAIR_s"], "CHAIR_i": expected["CHAIR_i"],
                                    "mentioned": float(expected["mentioned"]),
                                    "hallucinated": float(expected["hallucinated"]), "captions": 4.0,
                                    **event_recall(captions, events, EVENTS_TABLE)}, abs=1e-12)
    recall = evaluators.get("audio_event_recall")(modality, policy, data)
    assert recall["events"] == 6.0 and recall["recall"] == result["recall"]
    assert 0.0 <= recall["recall_low"] <= recall["recall"] <= recall["recall_high"] <= 1.0

    pope = evaluators.get("audio_pope")(modality, policy, data, setting="adversarial", per_sound=1)
    questions = pope_questions(events, EVENTS_TABLE, "adversarial", 1, 0)
    assert pope["questions"] == len(questions) == 2 * 3  # one annotated event a sound and one absent; none for sound 3
    answers = greedy(modality, policy, sound_dir, [(POPE_PROMPT.format(sound=EVENTS_TABLE.sound(q["object"])),
                                                    f"sound{q['index']}.wav") for q in questions])
    assert pope == pytest.approx({**pope_scores(answers, [q["label"] for q in questions]), "questions": 6.0},
                                 abs=1e-12)


def test_run_eval_reports_the_audio_evaluators(tmp_path, sound_dir):
    """``mmalign eval``'s ``run_eval`` finds the evaluators by name and reports their metrics,
    prefixed by name, beside the held-out preference metrics."""
    from mmalign.evaluate import run_eval

    train = write_audio_rows(tmp_path / "data", 2)
    data = write_jsonl(sound_dir / "eval.jsonl", [{"audio": "sound0.wav", "events": ["dog"]},
                                                  {"audio": "sound1.wav", "events": ["bell", "speech"]}])
    recipe = config.from_dict({
        "model": {"modality": "audio_language", "builder": "tiny_qwen2_audio", "dtype": "float32",
                  "lora": {"r": 4, "alpha": 8}, "options": {"max_length": 128, "max_new_tokens": 3}},
        "data": {"schema": "audio_qa", "train": train},
        "objective": {"name": "dpo", "params": {"beta": 0.1}},
        "reference": {"strategy": "adapters_off"},
        "train": {"seed": 0, "batch_size": 2, "max_steps": 1, "mixed_precision": "no"},
        "eval": {"every": 0, "evaluators": ["audio_chair", "audio_pope"], "data": data,
                 "options": {"audio_pope": {"setting": "random", "per_sound": 1}}},
        "logging": {"output_dir": str(tmp_path / "run"), "tensorboard": False, "progress": False},
    }, source="<audio_eval>")
    results = run_eval(recipe)
    assert results["audio_chair/captions"] == 2.0 and results["audio_chair/events"] == 3.0
    assert results["audio_pope/questions"] == 4.0 and "eval/loss" in results
    assert all(0.0 <= results[f"audio_pope/{k}"] <= 1.0 for k in ("accuracy", "precision", "recall", "f1"))
    assert json.loads((tmp_path / "run" / "eval" / "eval.json").read_text()) == results
