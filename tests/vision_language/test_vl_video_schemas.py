"""Video-aware vision-language schemas and the formats of other tools (LLaMA-Factory, ms-swift),
called directly on rows: the pairs they make and the errors bad rows raise."""
from __future__ import annotations

import pytest

from mmalign.data.io import RowRef
from mmalign.errors import DataError
from mmalign.modalities.vision_language import schemas
from mmalign.registry import datasets

WHERE = RowRef("data/rows.jsonl", 3)


def error_of(schema, row) -> str:
    with pytest.raises(DataError) as info:
        schema(row, WHERE)
    return str(info.value)


def test_the_new_schemas_are_registered():
    for name in ("video_qa", "video_unpaired", "llamafactory", "swift"):
        assert datasets.get(f"vision_language:{name}") is getattr(schemas, name)


# -- videos on the existing schemas ------------------------------------------------------------

def test_existing_schemas_give_an_empty_videos_list():
    row = {"image": "a.png", "question": "Q?", "chosen": "yes", "rejected": "no"}
    assert schemas.rlaif_v(row, WHERE)[0]["videos"] == []
    completions = [{"response": r, "annotations": {"Helpfulness": {"Rating": s}}} for r, s in (("a", 5), ("b", 1))]
    assert schemas.vlfeedback({"prompt": "P", "image": "a.png", "completions": completions}, WHERE)[0]["videos"] == []


def test_existing_schemas_pass_video_columns_through():
    row = {"prompt": "<video> and <image>: what?", "images": ["a.png"], "video": "clips/a.mp4",
           "rejected_video": {"bytes": b"\x00\x01", "path": None}, "chosen": "x", "rejected": "y"}
    pair = schemas.vl_conversational(row, WHERE)[0]
    assert pair["videos"] == ["clips/a.mp4"] and pair["images"] == ["a.png"]
    assert pair["rejected_video"] == b"\x00\x01"  # a datasets {"bytes", "path"} dict gives its bytes
    row = {"prompt": "Q", "videos": ["a.mp4", "b.mp4"], "chosen": "x", "rejected": "y"}
    assert schemas.vl_conversational(row, WHERE)[0]["videos"] == ["a.mp4", "b.mp4"]


def test_a_rejected_video_needs_exactly_one_video():
    row = {"prompt": "Q", "videos": ["a.mp4", "b.mp4"], "rejected_video": "c.mp4", "chosen": "x", "rejected": "y"}
    message = error_of(schemas.vl_conversational, row)
    assert message.startswith("data/rows.jsonl, row 3, field 'rejected_video': needs a row with exactly one video "
                              "(this row has 2)")


# -- video_qa -----------------------------------------------------------------------------------

def test_video_qa_pairs():
    row = {"video": "clips/a.mp4", "question": "What happens in <video>?", "chosen": "A dog runs.",
           "rejected": "A cat sleeps.", "margin": 2}
    assert schemas.video_qa(row, WHERE) == [{
        "prompt": "What happens in <video>?", "images": [], "videos": ["clips/a.mp4"], "audios": [],
        "chosen": "A dog runs.", "rejected": "A cat sleeps.", "fields": {"margin": 2.0}}]
    listed = schemas.video_qa({**row, "video": None, "videos": ["a.mp4", b"\x00raw"]}, WHERE)[0]
    assert listed["videos"] == ["a.mp4", b"\x00raw"]
    # an empty videos list: the video column
    assert schemas.video_qa({**row, "videos": []}, WHERE)[0]["videos"] == ["clips/a.mp4"]
    sentences = [{"text": "A dog.", "label": 1}, {"text": "A red ball.", "label": 0}]
    spanned = schemas.video_qa({**row, "rejected_sentences": sentences}, WHERE)[0]
    assert spanned["rejected"] == "A dog. A red ball." and spanned["rejected_spans"] == [(0, 6, 1), (7, 18, 0)]


@pytest.mark.parametrize("change, field, text", [
    ({"video": None}, "video", "is missing"),
    ({"video": None, "videos": []}, "video", "is missing"),
    ({"video": 3}, "video", "must be a video file's path or bytes (got int)"),
    ({"video": "  "}, "video", "must be a video file's path or bytes (got empty)"),
    ({"video": None, "videos": ["a.mp4", None]}, "videos[1]", "must be a video file's path or bytes (got NoneType)"),
    ({"video": None, "videos": {"a": 1}}, "videos", "must be a list of paths (got dict)"),
    ({"question": None}, "question", "is missing"),
    ({"question": ["Q?"]}, "question", "must be text (got list)"),
    ({"chosen": None}, "chosen", "is missing"),
    ({"rejected": 7}, "rejected", "must be text (got int)"),
])
def test_video_qa_bad_rows(change, field, text):
    row = {"video": "a.mp4", "question": "Q?", "chosen": "x", "rejected": "y", **change}
    assert f"row 3, field '{field}': {text}" in error_of(schemas.video_qa, row)


# -- video_unpaired -----------------------------------------------------------------------------

@pytest.mark.parametrize("label, expected", [(True, True), (1, True), (1.0, True), (False, False), (0, False)])
def test_video_unpaired_rows(label, expected):
    row = {"video": "a.mp4", "question": "What happens?", "response": "A dog runs.", "label": label, "score": 0.5}
    assert schemas.video_unpaired(row, WHERE) == [{
        "prompt": "What happens?", "images": [], "videos": ["a.mp4"], "completion": "A dog runs.",
        "label": expected, "fields": {"score": 0.5}}]


@pytest.mark.parametrize("change, field, text", [
    ({"label": 2}, "label", "must be true or false (got 2)"),
    ({"label": "true"}, "label", "must be true or false (got 'true')"),
    ({"label": 0.5}, "label", "must be true or false (got 0.5)"),
    ({"label": float("nan")}, "label", "must be true or false (got nan)"),
    ({"label": None}, "label", "is missing"),
    ({"response": " "}, "response", "is empty"),
    ({"response": {"text": "x"}}, "response", "must be text (got dict)"),
    ({"video": None}, "video", "is missing"),
])
def test_video_unpaired_bad_rows(change, field, text):
    row = {"video": "a.mp4", "question": "Q?", "response": "A dog.", "label": True, **change}
    assert f"row 3, field '{field}': {text}" in error_of(schemas.video_unpaired, row)


# -- LLaMA-Factory -----------------------------------------------------------------------------

def test_llamafactory_sharegpt_rows():
    row = {"conversations": [{"from": "human", "value": "<image>What is this?"},
                             {"from": "gpt", "value": "A dog."},
                             {"from": "human", "value": "And in <video>?"}],
           "chosen": {"from": "gpt", "value": "It runs."}, "rejected": {"from": "gpt", "value": "It flies."},
           "images": ["a.png"], "videos": ["b.mp4"], "system": "Be brief."}
    assert schemas.llamafactory(row, WHERE) == [{
        "prompt": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "<image>What is this?"},
                   {"role": "assistant", "content": "A dog."},
                   {"role": "user", "content": "And in <video>?"}],
        "images": ["a.png"], "videos": ["b.mp4"], "audios": [], "chosen": "It runs.", "rejected": "It flies.", "fields": {}}]


def test_llamafactory_system_turn_answers_as_text_and_tool_turns():
    row = {"conversations": [{"from": "system", "value": "Sys."}, {"from": "human", "value": "Call it."},
                             {"from": "function_call", "value": "{\"name\": \"f\"}"},
                             {"from": "observation", "value": "42"}],
           "chosen": "It is 42.", "rejected": [{"from": "gpt", "value": "No idea."}],
           "system": "ignored: the first turn is the system prompt", "images": "a.png"}
    pair = schemas.llamafactory(row, WHERE)[0]
    assert [m["role"] for m in pair["prompt"]] == ["system", "user", "assistant", "user"]
    assert pair["prompt"][0]["content"] == "Sys."
    assert (pair["chosen"], pair["rejected"]) == ("It is 42.", "No idea.")
    assert (pair["images"], pair["videos"]) == (["a.png"], [])


def test_llamafactory_openai_style_messages():
    row = {"messages": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "<video>What?"}],
           "chosen": {"role": "assistant", "content": "Rain."},
           "rejected": {"role": "assistant", "content": [{"type": "text", "text": "Snow."}]},
           "videos": ["clips/r.mp4"]}
    pair = schemas.llamafactory(row, WHERE)[0]
    assert pair["prompt"] == [{"role": "system", "content": "Sys."}, {"role": "user", "content": "<video>What?"}]
    assert (pair["chosen"], pair["rejected"], pair["videos"], pair["images"]) == ("Rain.", "Snow.", ["clips/r.mp4"], [])


def human(text):
    return {"from": "human", "value": text}


def gpt(text):
    return {"from": "gpt", "value": text}


@pytest.mark.parametrize("change, field, text", [
    ({"conversations": None}, "messages", "is missing"),  # neither form's column
    ({"conversations": []}, "conversations", "is empty"),
    ({"conversations": "Q?"}, "conversations", "must be a list of chat turns (got str)"),
    ({"conversations": [human("Q?"), "A"]}, "conversations[1]", "must be a chat turn (got str)"),
    ({"conversations": [{"from": "bot", "value": "Q?"}]}, "conversations[0]", "has the from 'bot'"),
    ({"conversations": [{"from": "human", "value": 5}]}, "conversations[0]", "has a value that is not text (got int)"),
    ({"conversations": [human("Q?"), gpt("A.")]}, "conversations", "does not end with a user turn"),
    ({"conversations": [gpt("A."), human("Q?")]}, "conversations[0]", "is an assistant turn where a user turn belongs"),
    ({"conversations": [human("Q?"), human("Q2?")]}, "conversations[1]", "is a user turn where an assistant turn"),
    ({"conversations": [human("Q?"), {"from": "system", "value": "S"}, human("Q2?")]}, "conversations[1]",
     "is a system turn where an assistant turn belongs"),
    ({"conversations": [{"from": "system", "value": "S"}]}, "conversations", "has no user turn"),
    ({"chosen": human("A.")}, "chosen", "is a turn of from 'human', not the assistant's answer"),
    ({"chosen": {"from": "gpt"}}, "chosen", "has no 'value'"),
    ({"rejected": 3}, "rejected", "must be text (got int)"),
    ({"rejected": None}, "rejected", "is missing"),
    ({"system": 3}, "system", "must be text (got int)"),
    ({"images": {"a": 1}}, "images", "must be a list of paths (got dict)"),
    ({"videos": [3]}, "videos[0]", "must be a video file's path or bytes (got int)"),
])
def test_llamafactory_bad_rows(change, field, text):
    row = {"conversations": [human("Q?")], "chosen": gpt("A."), "rejected": gpt("B."), **change}
    assert f"row 3, field '{field}': {text}" in error_of(schemas.llamafactory, row)


# -- ms-swift ----------------------------------------------------------------------------------

def test_swift_rows():
    row = {"messages": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "<image>What?"},
                        {"role": "assistant", "content": "A dog."}],
           "rejected_response": "A cat.", "images": ["a.png"]}
    assert schemas.swift(row, WHERE) == [{
        "prompt": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "<image>What?"}],
        "images": ["a.png"], "videos": [], "audios": [], "chosen": "A dog.", "rejected": "A cat.", "fields": {}}]


def test_swift_rejected_media_become_the_rejected_image_and_video():
    row = {"messages": [{"role": "user", "content": "<image><video>What?"}, {"role": "assistant", "content": "A."}],
           "rejected_response": "B.", "images": ["a.png"], "videos": ["a.mp4"],
           "rejected_images": ["other.png"], "rejected_videos": ["other.mp4"]}
    pair = schemas.swift(row, WHERE)[0]
    assert (pair["rejected_image"], pair["rejected_video"]) == ("other.png", "other.mp4")
    assert pair["images"] == ["a.png"] and pair["videos"] == ["a.mp4"]
    empty = schemas.swift({**row, "rejected_images": [], "rejected_videos": None}, WHERE)[0]
    assert "rejected_image" not in empty and "rejected_video" not in empty


def test_swift_multi_turn():
    turns = [("user", "Q1"), ("assistant", "A1"), ("user", "<video>Q2"), ("assistant", "A2")]
    row = {"messages": [{"role": r, "content": c} for r, c in turns], "rejected_response": "B2", "videos": "v.mp4"}
    pair = schemas.swift(row, WHERE)[0]
    assert [m["role"] for m in pair["prompt"]] == ["user", "assistant", "user"]
    assert (pair["chosen"], pair["rejected"], pair["videos"]) == ("A2", "B2", ["v.mp4"])


def msgs(*turns):
    return [{"role": r, "content": c} for r, c in turns]


@pytest.mark.parametrize("change, field, text", [
    ({"messages": None}, "messages", "is missing"),
    ({"messages": []}, "messages", "is empty"),
    ({"messages": msgs(("user", "Q?"))}, "messages[0]", "is a user turn, but the last message is the chosen answer"),
    ({"messages": msgs(("assistant", "A."))}, "messages", "has no user turn"),
    ({"messages": msgs(("system", "S"), ("assistant", "A."))}, "messages", "has no user turn"),
    ({"messages": msgs(("user", "Q"), ("user", "Q2"), ("assistant", "B"))}, "messages[1]",
     "is a user turn where an assistant turn belongs"),
    ({"messages": msgs(("user", "Q"), ("assistant", "A"))[::-1] + msgs(("assistant", "B"))}, "messages[0]",
     "is an assistant turn where a user turn belongs"),
    ({"messages": msgs(("critic", "Q"), ("assistant", "A"))}, "messages[0]", "has the role 'critic'"),
    ({"messages": [{"role": "user", "content": ["Q"]}, {"role": "assistant", "content": "A"}]}, "messages[0]",
     "has a content that is not text (got list)"),
    ({"rejected_response": None}, "rejected_response", "is missing"),
    ({"rejected_response": ["B."]}, "rejected_response", "must be text (got list)"),
    ({"rejected_images": ["x.png", "y.png"]}, "rejected_images",
     "gives 2 rejected image(s) for a row of 1 image(s)"),
    ({"images": ["a.png", "b.png"]}, "rejected_images", "gives 1 rejected image(s) for a row of 2 image(s)"),
    ({"rejected_videos": ["v.mp4"]}, "rejected_videos", "gives 1 rejected video(s) for a row of 0 video(s)"),
    ({"videos": ["a.mp4"], "rejected_videos": [5]}, "rejected_videos[0]", "must be a video file's path or bytes"),
    ({"rejected_images": 5}, "rejected_images", "must be a list of paths (got int)"),
])
def test_swift_bad_rows(change, field, text):
    row = {"messages": msgs(("user", "<image>Q?"), ("assistant", "A.")), "rejected_response": "B.",
           "images": ["a.png"], "rejected_images": ["r.png"], **change}
    assert f"row 3, field '{field}': {text}" in error_of(schemas.swift, row)


def test_a_schema_leaves_the_row_as_it_was():
    row = {"messages": msgs(("user", "Q?"), ("assistant", "A.")), "rejected_response": "B.", "images": ["a.png"],
           "rejected_images": ["r.png"]}
    snapshot = repr(row)
    schemas.swift(row, WHERE)
    assert repr(row) == snapshot
