"""Data schemas of the vision-language modality and the errors bad rows raise."""
from __future__ import annotations

import json

import pytest

from mmalign.data.io import RowRef
from mmalign.errors import DataError
from mmalign.modalities.vision_language.records import make_record


def test_rlaif_v_rows_become_records(modality_with_policy, write_rows, rlaif_rows):
    modality, _ = modality_with_policy()
    records = modality.load_records(write_rows("rlaif.jsonl", rlaif_rows), None)  # schema detected
    assert [r["sample_id"] for r in records] == ["rlaif.jsonl#0", "rlaif.jsonl#1"]
    # no placeholder: the image goes in front of the question; "<image>\n" marks its place
    assert records[0]["messages"][0]["content"] == [
        {"type": "image"}, {"type": "text", "text": "What is in the image?"}]
    assert records[1]["messages"][0]["content"][0] == {"type": "image"}
    image_id = modality.processor.image_token_id
    assert records[0]["prompt_ids"].count(image_id) == 16  # (32 // 8) ** 2 patches, CLS dropped
    assert records[0]["chosen_ids"][-1] == modality.processor.tokenizer.eos_token_id


def test_conversational_rows_with_two_images(modality_with_policy, write_rows):
    modality, _ = modality_with_policy()
    rows = [{"prompt": "Compare <image> with <image> please.", "images": ["img0.png", "img1.png"],
             "chosen": [{"role": "assistant", "content": "They differ."}], "rejected": "Same."}]
    record = modality.load_records(write_rows("c.jsonl", rows), "vl_conversational")[0]
    kinds = [item["type"] for item in record["messages"][0]["content"]]
    assert kinds == ["text", "image", "text", "image", "text"]
    assert record["prompt_ids"].count(modality.processor.image_token_id) == 32
    assert record["chosen"] == "They differ."


def test_rlhf_v_reads_the_json_text_field(modality_with_policy, write_rows):
    modality, _ = modality_with_policy()
    text = json.dumps({"question": "What is here?", "chosen": "A dog.", "rejected": "A dog and a cat."})
    record = modality.load_records(write_rows("r.jsonl", [{"image": "img0.png", "text": text}]), None)[0]
    assert (record["chosen"], record["rejected"]) == ("A dog.", "A dog and a cat.")


def test_vlfeedback_ratings_become_pairs_without_ties(modality_with_policy, write_rows):
    modality, _ = modality_with_policy()

    def completion(response, helpful, faithful):
        return {"response": response, "annotations": {"Helpfulness": {"Rating": str(helpful)},
                                                      "Visual Faithfulness": {"Rating": str(faithful)}}}

    # mean ratings: A (5 + 3) / 2 = 4, B (4 + 4) / 2 = 4, C (2 + 2) / 2 = 2
    # pairs: A > C and B > C with margin 2; A vs B is a tie and is dropped
    row = {"prompt": "Describe.", "image": "img0.png",
           "completions": [completion("A dog.", 5, 3), completion("A brown dog.", 4, 4), completion("A cat.", 2, 2)]}
    records = modality.load_records(write_rows("v.jsonl", [row]), "vlfeedback")
    assert [(r["chosen"], r["rejected"], r["fields"]["margin"]) for r in records] == [
        ("A dog.", "A cat.", 2.0), ("A brown dog.", "A cat.", 2.0)]
    assert [r["sample_id"] for r in records] == ["v.jsonl#0.0", "v.jsonl#0.1"]
    assert modality.collate(records).fields["margin"].tolist() == [2.0, 2.0]


def _error(modality, path, schema="rlaif_v") -> str:
    with pytest.raises(DataError) as info:
        modality.load_records(path, schema)
    return str(info.value)


def test_missing_image_file(modality_with_policy, write_rows, rlaif_rows):
    modality, _ = modality_with_policy()
    path = write_rows("m.jsonl", [rlaif_rows[0], {**rlaif_rows[0], "image": "nowhere.png"}])
    message = _error(modality, path)
    assert message.startswith(f"{path}, row 1, field 'image': image file ")
    assert "nowhere.png' does not exist" in message


def test_undecodable_image(modality_with_policy, write_rows, image_dir, rlaif_rows):
    modality, _ = modality_with_policy()
    (image_dir / "broken.png").write_bytes(b"\x89PNG this is not really a png")
    message = _error(modality, write_rows("b.jsonl", [{**rlaif_rows[0], "image": "broken.png"}]))
    assert "row 0, field 'image': cannot decode image file" in message
    with pytest.raises(DataError, match="field 'image': cannot decode these image bytes"):
        make_record({"prompt": "Q?", "images": [b"not an image"], "chosen": "a", "rejected": "b"},
                    RowRef("mem", 0), "mem#0")


def test_more_or_fewer_placeholders_than_images(modality_with_policy, write_rows, rlaif_rows):
    modality, _ = modality_with_policy()
    more = [{**rlaif_rows[0], "question": "<image> and <image>: what?"}]
    assert "row 0, field 'prompt': has 2 image placeholders but the row has 1 images (more placeholders" in _error(
        modality, write_rows("p.jsonl", more))
    fewer = [{"prompt": "<image> what?", "images": ["img0.png", "img1.png"], "chosen": "a", "rejected": "b"}]
    assert "has 1 image placeholders but the row has 2 images (fewer placeholders" in _error(
        modality, write_rows("f.jsonl", fewer), "vl_conversational")


def test_truncation_never_cuts_image_tokens(modality_with_policy, write_rows, rlaif_rows):
    modality, _ = modality_with_policy(max_length=12)  # the prompt alone is 27 tokens, 16 of them image
    message = _error(modality, write_rows("t.jsonl", rlaif_rows[:1]))
    assert "row 0, field 'images': the prompt is 27 tokens (16 of them image tokens)" in message
    assert "would cut into the prompt's image tokens" in message and "Raise the modality option max_length" in message


def test_long_responses_are_truncated_and_counted(modality_with_policy, write_rows, rlaif_rows):
    modality, _ = modality_with_policy(max_length=30)  # 27 prompt tokens leave 3 per response
    record = modality.load_records(write_rows("t.jsonl", rlaif_rows[:1]), "rlaif_v")[0]
    assert len(record["prompt_ids"]) == 27 and len(record["chosen_ids"]) == 3 and len(record["rejected_ids"]) == 3
    assert modality.repairs["responses truncated to max_length"] == 2


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_empty_response(modality_with_policy, write_rows, side, rlaif_rows):
    modality, _ = modality_with_policy()
    message = _error(modality, write_rows("e.jsonl", [{**rlaif_rows[0], side: "  "}]))
    assert f"row 0, field '{side}': is empty" in message


def test_rgba_images_are_converted_and_counted(modality_with_policy, write_rows, image_dir, make_image,
                                              rlaif_rows):
    modality, _ = modality_with_policy()
    make_image(7).convert("RGBA").save(image_dir / "rgba.png")
    modality.load_records(write_rows("a.jsonl", [{**rlaif_rows[0], "image": "rgba.png"}]), "rlaif_v")
    assert modality.repairs["repaired: RGBA to RGB"] == 1


def test_retrieved_term_without_retrieved_image_names_the_row(pair_records):
    modality, policy, records = pair_records
    batch = modality.collate(records[:1])
    with pytest.raises(DataError, match=r"row 0, field 'retrieved_image': has no retrieved_image"):
        modality.surrogate(policy, batch, modality.draw(batch, 0), frozenset({"terms:chosen|condition=retrieved"}))
