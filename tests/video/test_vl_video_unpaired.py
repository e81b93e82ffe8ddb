"""Unpaired clip rows (``video_unpaired``: video, question, response, label) for KTO: a
completion scores exactly as the same answer does as the chosen side of a pair, the
mismatched completions are the next row's, and a KTO run trains on them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("av")

from mmalign import config  # noqa: E402
from mmalign.train.run import train  # noqa: E402

from tests.video.clip_rows import ANSWERS, tiny_modality, write_clips  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def write_unpaired(folder: Path, count: int = 4) -> str:
    clips = write_clips(folder, count)
    rows = [{"video": clip, "question": "What happens in the clip?", "response": ANSWERS[k][k % 2],
             "label": k % 2 == 0} for k, clip in enumerate(clips)]
    path = folder / "unpaired.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_unpaired_completion_scores_as_the_chosen_side_of_a_pair(tmp_path):
    modality, policy = tiny_modality("tiny_qwen25_vl", packed=False)
    unpaired = modality.load_records(write_unpaired(tmp_path), "vision_language:video_unpaired")
    paired_rows = [{"video": r["videos"][0], "question": "What happens in the clip?", "chosen": r["completion"],
                    "rejected": "a bird"} for r in unpaired]
    (tmp_path / "paired.jsonl").write_text("".join(json.dumps(r) + "\n" for r in paired_rows))
    paired = modality.load_records(str(tmp_path / "paired.jsonl"), "vision_language:video_qa")
    batch = modality.collate(unpaired)
    assert batch.inputs["mismatched_ids"] == batch.inputs["completion_ids"][1:] + batch.inputs["completion_ids"][:1]
    with torch.no_grad():
        out = modality.surrogate(policy, batch, modality.draw(batch, 0), frozenset({"label", "terms:kl_mismatched"}))
        pairs = modality.surrogate(policy, modality.collate(paired), modality.draw(batch, 0), frozenset())
    torch.testing.assert_close(out.chosen, pairs.chosen, atol=1e-5, rtol=0)
    assert out.label.tolist() == [True, False, True, False]
    assert out.terms["kl_mismatched"].shape == (4,) and not torch.allclose(out.terms["kl_mismatched"], out.chosen)


def test_kto_trains_on_unpaired_clips(tmp_path):
    recipe = config.from_dict({
        "model": {"modality": "vision_language", "builder": "tiny_qwen25_vl", "lora": {"r": 4, "alpha": 8},
                  "options": {"max_length": 256, "video_frames": 4}},
        "data": {"train": write_unpaired(tmp_path / "data"), "schema": "video_unpaired"},
        "objective": {"name": "kto", "params": {"beta": 0.5}},
        "reference": {"strategy": "adapters_off"},
        "train": {"seed": 0, "batch_size": 4, "lr": 2e-2, "max_steps": 3},
        "eval": {"every": 0},
        "logging": {"output_dir": str(tmp_path / "run"), "every": 1, "tensorboard": False, "progress": False},
    }, source="<kto>")
    session = train(recipe)
    losses = [h["loss"] for h in session.history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_sample_answers_about_a_clip(tmp_path):
    """``sample`` reads the clip like training does and answers greedily, the same twice."""
    modality, policy = tiny_modality("tiny_qwen25_vl", max_new_tokens=4)
    clip = write_clips(tmp_path, 1)[0]
    prompts = [{"prompt": "What happens in the clip?", "videos": [str(tmp_path / clip)]}]
    first, again = modality.sample(policy, prompts), modality.sample(policy, prompts)
    assert first == again and len(first) == 1 and isinstance(first[0][0], str)


@pytest.mark.parametrize("columns, schema", [
    ({"video", "question", "chosen", "rejected"}, "video_qa"),
    ({"video", "question", "response", "label"}, "video_unpaired"),
    ({"conversations", "chosen", "rejected", "videos"}, "llamafactory"),
    ({"messages", "rejected_response", "videos"}, "swift")])
def test_video_schemas_are_told_from_their_columns(columns, schema):
    from mmalign.data.io import RowRef
    from mmalign.modalities.vision_language.records import detect_schema

    assert detect_schema(dict.fromkeys(columns, ""), RowRef("rows.jsonl", 0)) == f"vision_language:{schema}"
