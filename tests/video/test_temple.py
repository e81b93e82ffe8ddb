"""TEMPLE's temporal preference pairs: built with the tiny Qwen2.5-VL (random weights, so its
answers are arbitrary but deterministic), their bookkeeping under answers we control, and the
large-to-small perturbation schedule, in memory and through a written ``video_qa`` file."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from tests.video.clip_rows import tiny_modality, write_clips  # noqa: E402

from mmalign.data.io import RowRef  # noqa: E402
from mmalign.errors import ConfigError, DataError  # noqa: E402
from mmalign.modalities.video_io import write_mp4  # noqa: E402
from mmalign.modalities.vision_language.augment import temple as registered  # noqa: E402
from mmalign.modalities.vision_language.augment.common import same_text  # noqa: E402
from mmalign.modalities.vision_language.augment.temple import (DROPS, FIELD, answers_match, curriculum,  # noqa: E402
                                                               frame_order, read_questions, temple, write_pairs)
from mmalign.modalities.vision_language.media import open_clip  # noqa: E402
from mmalign.modality import row_generator  # noqa: E402

KINDS = ("reverse", "shuffle", "drop")
MAGNITUDES = (4, 2)
QUESTION = "What happens in the clip?"


def write_questions(folder: Path, rows: list[dict]) -> str:
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny Qwen2.5-VL reading 4 of each clip's 8 frames, and three noise clips' questions."""
    folder = tmp_path_factory.mktemp("temple")
    clips = write_clips(folder, 3, frames=8)
    questions = read_questions(write_questions(folder, [{"video": c, "question": QUESTION} for c in clips]))
    modality, policy = tiny_modality("tiny_qwen25_vl", max_new_tokens=8)
    return modality, policy, questions


@pytest.fixture(scope="module")
def built(tiny):
    modality, policy, questions = tiny
    counts = Counter()
    pairs = temple(modality, policy, questions, kinds=KINDS, magnitudes=MAGNITUDES, counts=counts)
    return pairs, counts


def test_pairs_from_the_tiny_model(tiny, built):
    """Each pair: the clean answer chosen, a different answer on the perturbed clip rejected,
    the clean clip in the prompt, the magnitude in its fields; every candidate is counted once."""
    modality, policy, questions = tiny
    pairs, counts = built
    assert pairs, "the tiny model answers some perturbed clip differently"
    assert counts["candidates"] == len(questions) * len(KINDS) * len(MAGNITUDES)
    assert counts["candidates"] == counts["pairs"] + sum(counts[k] for k in DROPS)
    assert counts["pairs"] == len(pairs)
    # on 4 frames, shuffling 2 runs can only swap them: reversing 2 runs already showed that clip
    assert counts["repeated_clip"] >= len(questions)
    by_id = {q["sample_id"]: q for q in questions}
    for pair in pairs:
        source_id, method, kind, magnitude = pair["sample_id"].rsplit("/", 3)
        question, meta = by_id[source_id], pair["augment"]
        assert method == "temple" and (meta["kind"], meta["magnitude"]) == (kind, int(magnitude))
        assert pair["fields"] == {FIELD: float(magnitude)}
        assert not same_text(pair["chosen"], pair["rejected"])
        # the prompt is the clean clip (the row's own file) and the question
        assert pair["videos"] == [question["video"]] and "rejected_video" not in pair
        user = pair["messages"][0]["content"]
        assert user[0] == {"type": "video"} and user[1]["text"] == QUESTION
        # chosen: the answer on the clean clip; rejected: the answer on the frames in frame_order
        clean = open_clip(question["video"], RowRef(question["file"], question["row"]), "video",
                          modality.options.sampling)
        order = frame_order(4, kind, int(magnitude), row_generator(0, source_id, 0, f"temple/{kind}/{magnitude}"))
        assert order == meta["frame_order"] and order != [0, 1, 2, 3]
        perturbed = clean._replace(frames=clean.frames[order])
        prompts = [{"prompt": QUESTION, "videos": [clip]} for clip in (clean, perturbed)]
        assert [a[0] for a in modality.sample(policy, prompts, 1, seeds=[0, 0])] == [pair["chosen"], pair["rejected"]]
    # the pairs train: they collate and score under the clean clip
    batch = modality.collate(pairs)
    surrogate = modality.surrogate(policy, batch, modality.draw(batch, 0, policy), frozenset())
    assert torch.isfinite(surrogate.chosen).all() and torch.isfinite(surrogate.rejected).all()


def test_the_schedule_orders_pairs_large_to_small_and_survives_a_file(tiny, built, tmp_path):
    """curriculum puts magnitude 4 before 2 (stable within a magnitude); write_pairs keeps that
    order, and the video_qa schema reads the magnitude back as a field."""
    modality, _, _ = tiny
    pairs, _ = built
    ordered = curriculum(pairs[::-1])
    magnitudes = [p["fields"][FIELD] for p in ordered]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert [p["sample_id"] for p in ordered] == (
        [p["sample_id"] for p in pairs[::-1] if p["fields"][FIELD] == 4]
        + [p["sample_id"] for p in pairs[::-1] if p["fields"][FIELD] == 2])
    path = write_pairs(ordered, tmp_path / "out" / "temple_pairs.jsonl")
    loaded = modality.load_records(path, "vision_language:video_qa")
    assert [(r["chosen"], r["rejected"], r["fields"][FIELD]) for r in loaded] == [
        (p["chosen"], p["rejected"], p["fields"][FIELD]) for p in ordered]


def test_curriculum_by_hand():
    """Values 2, 8, 4, 8, 2: stable large-to-small is rows 1, 3 (the 8s in file order), 2, 0, 4;
    with a seed the rows of one value may trade places, never across values."""
    rows = [{"sample_id": f"r{i}", "fields": {FIELD: v}} for i, v in enumerate([2, 8, 4, 8, 2])]
    assert [r["sample_id"] for r in curriculum(rows)] == ["r1", "r3", "r2", "r0", "r4"]
    mixed = curriculum(rows, seed=3)
    assert [r["fields"][FIELD] for r in mixed] == [8, 8, 4, 2, 2]
    assert {r["sample_id"] for r in mixed[:2]} == {"r1", "r3"} and mixed == curriculum(rows[::-1], seed=3)
    with pytest.raises(DataError, match="row 'r0': field 'difficulty' has none"):
        curriculum(rows, field="difficulty")


# -- bookkeeping under controlled answers ---------------------------------------------------

#: grey level of frame t of the flat clips: the frame order reads back from the pixels
STEP = 60


def flat_clip(path: Path) -> None:
    frames = np.stack([np.full((32, 32, 3), STEP * t + 10, dtype=np.uint8) for t in range(4)])
    write_mp4(frames, path, fps=4)


def fake_sample(seen: list[list[int]]):
    """Answers from the frame order shown: the clean order "A dog runs.", the whole clip
    reversed "a  DOG runs." (the same answer, up to case and spacing), anything else
    "a cat sleeps"; every order answered is appended to ``seen``."""
    def sample(model, prompts, n=1, seeds=0):
        out = []
        for prompt in prompts:
            order = ((prompt["videos"][0].frames.float().mean((1, 2, 3)) - 10) / STEP).round().long().tolist()
            seen.append(order)
            out.append(["A dog runs." if order == [0, 1, 2, 3] else "a  DOG runs." if order == [3, 2, 1, 0]
                        else "a cat sleeps"])
        return out
    return sample


def expected(sample_id: str) -> Counter:
    """What the rule of :func:`fake_sample` makes of one question's candidates, in plan order."""
    counts, seen = Counter(), {(0, 1, 2, 3)}
    for magnitude in MAGNITUDES:
        for kind in KINDS:
            order = tuple(frame_order(4, kind, magnitude, row_generator(0, sample_id, 0, f"temple/{kind}/{magnitude}")))
            outcome = "repeated_clip" if order in seen else "same_answer" if order == (3, 2, 1, 0) else "pairs"
            seen.add(order)
            counts[outcome] += 1
    return counts


def test_dropped_candidates_under_controlled_answers(tiny, tmp_path, monkeypatch):
    """A known answer the clean answer misses drops the whole question; a matching one (up to
    case and end punctuation) or an unknown one keeps it; equal answers and repeated clips drop
    single candidates; every count adds up."""
    modality, policy, _ = tiny
    for k in range(3):
        flat_clip(tmp_path / f"flat{k}.mp4")
    questions = read_questions(write_questions(tmp_path, [
        {"video": "flat0.mp4", "question": QUESTION, "answer": "a dog runs"},    # matches "A dog runs."
        {"video": "flat1.mp4", "question": QUESTION, "answer": "A bird flies."},  # the clean answer is wrong
        {"video": "flat2.mp4", "question": QUESTION}]))                          # no truth to check
    seen: list[list[int]] = []
    monkeypatch.setattr(modality, "sample", fake_sample(seen))
    counts = Counter()
    pairs = temple(modality, policy, questions, kinds=KINDS, magnitudes=MAGNITUDES, counts=counts)
    want = expected(questions[0]["sample_id"]) + expected(questions[2]["sample_id"])
    per_question = len(KINDS) * len(MAGNITUDES)
    assert counts == Counter(candidates=3 * per_question, wrong_clean_answer=per_question, **want)
    # reverse at magnitude 4 is the whole clip reversed: its answer equals the clean one
    assert want["same_answer"] >= 2 and want["repeated_clip"] >= 2
    # the wrong question was answered once (clean) and never perturbed
    assert len(seen) == 3 + (per_question - expected(questions[0]["sample_id"])["repeated_clip"]) + (
        per_question - expected(questions[2]["sample_id"])["repeated_clip"])
    assert {p["sample_id"].split("/")[0] for p in pairs} == {questions[0]["sample_id"], questions[2]["sample_id"]}
    for pair in pairs:
        assert (pair["chosen"], pair["rejected"]) == ("A dog runs.", "a cat sleeps")
        assert pair["augment"]["answer_checked"] == (pair["sample_id"].startswith(questions[0]["sample_id"] + "/"))
    assert not [p for p in pairs if p["augment"]["frame_order"] == [3, 2, 1, 0]]


def test_answers_match_normalises_case_space_and_end_punctuation():
    assert answers_match("  The Dog  runs. ", "the dog runs")
    assert answers_match("B.", "b")
    assert not answers_match("the dog runs fast", "the dog runs")


def test_frame_order_by_magnitude():
    """Magnitude m on T frames: reverse / shuffle min(m, T) runs, drop keeps max(1, T // m)."""
    g = torch.Generator().manual_seed(0)
    assert frame_order(8, "reverse", 2, g) == [4, 5, 6, 7, 0, 1, 2, 3]
    assert frame_order(8, "reverse", 4, g) == [6, 7, 4, 5, 2, 3, 0, 1]
    assert frame_order(8, "reverse", 16, g) == [7, 6, 5, 4, 3, 2, 1, 0]
    # 2 runs have one non-identity order: swapped
    assert frame_order(8, "shuffle", 2, torch.Generator().manual_seed(5)) == [4, 5, 6, 7, 0, 1, 2, 3]
    # drop at magnitude 4 keeps 8 // 4 = 2 frames; at 16, one
    assert len(set(frame_order(8, "drop", 4, torch.Generator().manual_seed(0)))) == 2
    assert len(set(frame_order(8, "drop", 16, torch.Generator().manual_seed(0)))) == 1
    # speed m: frame t shows min(m t, T - 1)
    assert frame_order(8, "speed", 2, g) == [0, 2, 4, 6, 7, 7, 7, 7]


def test_options_and_inputs_are_checked(tiny, tmp_path):
    modality, policy, questions = tiny
    assert registered is temple
    with pytest.raises(ConfigError, match="temple kinds must be distinct names"):
        temple(modality, policy, questions, kinds=("reverse", "blur"))
    with pytest.raises(ConfigError, match="temple magnitudes must be distinct integers >= 2"):
        temple(modality, policy, questions, magnitudes=(1,))
    with pytest.raises(ConfigError, match=r"questions\[0\] has no sample_id, file, row"):
        temple(modality, policy, [{"video": "a.mp4", "question": QUESTION}])
    with pytest.raises(DataError, match="needs exactly one clip"):
        read_questions(write_questions(tmp_path, [{"videos": ["a.mp4", "b.mp4"], "question": QUESTION}]))
