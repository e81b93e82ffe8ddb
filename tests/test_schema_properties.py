"""Every registered dataset schema on arbitrary rows (hypothesis): it returns a list of
records or raises an mmalign error (a :class:`~mmalign.errors.MmalignError`, which names
file, row and field); never a KeyError, TypeError, AttributeError or any other exception,
which would end a long run with a traceback instead of a message.

Schemas are read from ``mmalign.registry.datasets`` (text, image_diffusion and
vision_language schemas, and any plugin's), so a schema registered later is covered too.
A schema is called as the loaders call it: ``schema(row, RowRef(file, row_index))``.

Rows hold JSON-like values as ``mmalign.data.io.read_rows`` can yield them: null, booleans,
int64 / uint64 integers (what a table column can hold; a JSON integer beyond that is
refused by the reader before any schema sees it), floats including nan and +-inf, text
including very long text, bytes (binary columns, encoded images), lists and objects nested
in any mix. A row is built well-formed (a message list, a rated completion, labelled
sentences, JSON in a string, ...), mostly of the columns the schema under test reads, with
a junk value at one leaf in twelve, and then damaged at up to two places of any depth: a
value replaced by junk or a key deleted. A bad value deep inside an otherwise good row is
what reaches the checks deep inside a schema, not only its first missing-column message.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmalign.data.io import RowRef
from mmalign.errors import MmalignError
from mmalign.registry import datasets

SCHEMAS = datasets.names()
WHERE = RowRef("data/rows.jsonl", 7)


def any_of(*strategies: st.SearchStrategy) -> st.SearchStrategy:
    """One of ``strategies``, each as likely (``st.one_of`` leans towards the first)."""
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


# -- junk: any JSON-like value ----------------------------------------------------------------------

INT64 = st.integers(min_value=-2**63, max_value=2**64 - 1)
#: long text without drawing every character: a short piece repeated up to 200k times
HUGE_TEXT = st.builds(lambda piece, n: piece * n, st.text(min_size=1, max_size=3), st.integers(0, 200_000))
TEXT = any_of(st.text(min_size=1, max_size=12), st.sampled_from(["<image>", "N/A", "1", " \n"]), HUGE_TEXT)
SCALARS = any_of(st.none(), st.booleans(), INT64, st.floats(allow_nan=True, allow_infinity=True),
                 TEXT, st.binary(max_size=16))
INNER_KEYS = st.sampled_from(["role", "content", "text", "label", "response", "annotations", "Rating",
                              "Helpfulness", "bytes", "path", "question", "chosen", "rejected", "type",
                              "from", "value"])


def nested(scalars: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(scalars, lambda children: any_of(
        st.lists(children, max_size=4),
        st.dictionaries(any_of(INNER_KEYS, st.text(max_size=6)), children, max_size=4)), max_leaves=12)


#: a value where another was expected: a bare scalar as often as a nested one (containers
#: are built fresh for every draw: a row is damaged in place)
JUNK = any_of(st.sampled_from([None, True, False, 0, 1, -1, 2.5, float("nan"), float("inf"), "", "x",
                               b"\x89PNG"]),
              st.builds(list), st.builds(dict), st.builds(lambda: [None]), st.builds(lambda: {"": None}),
              SCALARS, nested(SCALARS))
#: what a JSON document can hold (no bytes), for text that is JSON inside a string
JSON_DOC = nested(any_of(st.none(), st.booleans(), INT64, st.floats(), st.text(max_size=12)))


#: ``ODDS[n]``: 0 .. n-1, uniformly. Hypothesis leans integer draws towards 0, and any draw
#: towards its first choice, so a rare case is always the last choice, never the first.
ODDS = {n: st.sampled_from(range(n)) for n in (2, 3, 8, 10, 12)}


@st.composite
def leaf(draw, valid: st.SearchStrategy) -> Any:
    """A value nested inside a column: junk one time in twelve, else well-formed. Damage
    (below) reaches one place per draw; this reaches the many leaves of a nested column."""
    return draw(JUNK) if draw(ODDS[12]) == 11 else draw(valid)


# -- well-formed values of the known columns (with junk leaves now and then) -----------------------

MESSAGE = st.fixed_dictionaries({"role": leaf(st.sampled_from(["user", "assistant", "system"])),
                                 "content": leaf(TEXT)})
MESSAGES = st.lists(leaf(MESSAGE), min_size=1, max_size=3)
#: a response as TRL writes it: one assistant message, content text or [{"type", "text"}]
TRL_RESPONSE = st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": any_of(
    leaf(TEXT), st.lists(leaf(st.fixed_dictionaries({"type": st.just("text"), "text": leaf(TEXT)})),
                         min_size=1, max_size=3))}), min_size=1, max_size=1)
RESPONSE = any_of(TEXT, MESSAGES, TRL_RESPONSE)
RATING = any_of(st.integers(1, 5), st.floats(1, 5), st.sampled_from(["3", "4.5", "N/A", ""]))
ANNOTATIONS = st.fixed_dictionaries({}, optional={
    aspect: leaf(st.fixed_dictionaries({"Rating": leaf(RATING)}))
    for aspect in ("Helpfulness", "Visual Faithfulness", "Ethical Considerations")})
SENTENCE = st.fixed_dictionaries({"text": leaf(TEXT), "label": leaf(st.sampled_from([0, 1]))})
SENTENCES = st.lists(leaf(SENTENCE), min_size=1, max_size=3)
IMAGE = any_of(st.binary(max_size=16), st.sampled_from(["a.png", "missing/b.jpg"]),
               st.fixed_dictionaries({"bytes": leaf(st.binary(max_size=8)), "path": leaf(st.none())}))
VIDEO = any_of(st.binary(max_size=16), st.sampled_from(["a.mp4", "clips/b.mp4"]),
               st.fixed_dictionaries({"bytes": leaf(st.binary(max_size=8)), "path": leaf(st.none())}))
#: LLaMA-Factory's sharegpt turns
SHAREGPT_TURN = st.fixed_dictionaries({"from": leaf(st.sampled_from(["human", "gpt", "system", "observation"])),
                                       "value": leaf(TEXT)})
COMPLETION = st.fixed_dictionaries({"response": leaf(TEXT), "annotations": leaf(ANNOTATIONS)})
#: RLHF-V's ``text``: a JSON object in a string (or already parsed), or text that only
#: looks like JSON
RLHF_FIELDS = st.fixed_dictionaries({"question": leaf(TEXT), "chosen": leaf(TEXT), "rejected": leaf(TEXT)})
RLHF_TEXT = any_of(
    st.builds(json.dumps, st.fixed_dictionaries({"question": TEXT, "chosen": TEXT, "rejected": TEXT})),
    RLHF_FIELDS,
    st.builds(json.dumps, JSON_DOC),
    st.builds(lambda n: "9" * n, st.integers(1, 10_000)),  # Python caps int parsing at 4300 digits
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 100_000)))  # nesting beyond recursion

WELL_FORMED: dict[str, st.SearchStrategy] = {
    "prompt": any_of(TEXT, MESSAGES), "chosen": RESPONSE, "rejected": RESPONSE,
    "completion": RESPONSE, "label": st.sampled_from([0, 1, True, False, 0.5, 2]),
    "caption": TEXT, "question": TEXT, "jpg_0": IMAGE, "jpg_1": IMAGE,
    "label_0": st.sampled_from([0, 1, 0.5, 0.25, "1", "0.5"]), "image": IMAGE,
    "images": st.lists(IMAGE, max_size=3), "img_path": TEXT, "rejected_image": IMAGE,
    "retrieved_image": IMAGE, "text": RLHF_TEXT, "margin": st.floats(allow_nan=True),
    "completions": st.lists(leaf(COMPLETION), min_size=1, max_size=4),
    "chosen_sentences": SENTENCES, "rejected_sentences": SENTENCES,
    "video": VIDEO, "videos": st.lists(VIDEO, max_size=3), "rejected_video": VIDEO, "response": RESPONSE,
    "conversations": st.lists(leaf(SHAREGPT_TURN), min_size=1, max_size=4), "messages": MESSAGES,
    "system": TEXT, "rejected_response": TEXT, "rejected_images": st.lists(IMAGE, max_size=2),
    "rejected_videos": st.lists(VIDEO, max_size=2),
}


#: columns that go together, as the built-in schemas read them
PAIR = ("prompt", "chosen", "rejected")
UNPAIRED = ("prompt", "completion", "label")
PICKAPIC = ("caption", "jpg_0", "jpg_1", "label_0")
IMAGE_LABELS = ("prompt", "caption", "image", "label")
RLAIF_V = ("image", "question", "chosen", "rejected")
VL_CONVERSATIONAL = ("prompt", "images", "image", "chosen", "rejected")
RLHF_V = ("image", "text")
VLFEEDBACK = ("prompt", "image", "img_path", "completions")
VL_EXTRAS = ("rejected_image", "retrieved_image", "margin", "chosen_sentences", "rejected_sentences",
             "rejected_video")
VIDEO_QA = ("video", "videos", "question", "chosen", "rejected")
VIDEO_UNPAIRED = ("video", "videos", "question", "response", "label")
LLAMAFACTORY = ("conversations", "messages", "chosen", "rejected", "system", "images", "videos")
SWIFT = ("messages", "rejected_response", "images", "videos", "rejected_images", "rejected_videos")
GROUPS = [PAIR, UNPAIRED, PICKAPIC, IMAGE_LABELS, RLAIF_V, VL_CONVERSATIONAL, RLHF_V, VLFEEDBACK, VL_EXTRAS,
          VIDEO_QA, VIDEO_UNPAIRED, LLAMAFACTORY, SWIFT]
#: the columns each built-in schema reads, so that its rows mostly hold them: a row with no
#: image never reaches the checks of rlhf_v's JSON. A schema not listed (a plugin's, one
#: added later) gets rows of one to three random groups.
READS: dict[str, tuple[str, ...]] = {
    "text:preference": PAIR, "text:unpaired": PAIR + UNPAIRED, "image_diffusion:pickapic": PICKAPIC,
    "image_diffusion:image_pairs": PAIR + ("caption",), "image_diffusion:image_labels": IMAGE_LABELS,
    "vision_language:rlaif_v": RLAIF_V + VL_EXTRAS,
    "vision_language:vl_conversational": VL_CONVERSATIONAL + VL_EXTRAS,
    "vision_language:rlhf_v": RLHF_V + VL_EXTRAS, "vision_language:vlfeedback": VLFEEDBACK,
    "vision_language:video_qa": VIDEO_QA + VL_EXTRAS, "vision_language:video_unpaired": VIDEO_UNPAIRED,
    "vision_language:llamafactory": LLAMAFACTORY + VL_EXTRAS, "vision_language:swift": SWIFT + VL_EXTRAS,
}


@st.composite
def damage(draw, row: dict[str, Any]) -> None:
    """Replace one value of ``row``, at any depth, by junk, or delete it from its object.

    A column is picked first (every column alike, however deeply nested), then the walk
    goes one level deeper with probability 1/2 at each level."""
    path = (draw(st.sampled_from(sorted(row))),)
    value = row[path[0]]
    while isinstance(value, (dict, list)) and value and draw(ODDS[2]):
        key = draw(st.sampled_from(sorted(value) if isinstance(value, dict) else range(len(value))))
        path, value = path + (key,), value[key]
    parent = row
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(ODDS[2]):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JUNK)


@st.composite
def rows(draw, reads: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A well-formed row damaged at up to two places, plus a few unknown columns.

    The columns in ``reads`` (or in one to three random groups) are each present seven times
    in eight, or one time in three for the optional columns of ``VL_EXTRAS`` (labelled
    sentences replace the chosen / rejected text, which then goes unread); any other known
    column is present one time in ten."""
    if reads is None:
        reads = tuple(c for group in draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3))
                      for c in group)
    row: dict[str, Any] = {}
    for column, value in WELL_FORMED.items():
        if column in VL_EXTRAS and column in reads:
            present = draw(ODDS[3]) == 2
        else:
            present = draw(ODDS[8]) != 7 if column in reads else draw(ODDS[10]) == 9
        if present:
            row[column] = draw(value)
    for _ in range(draw(st.sampled_from([1, 0, 0, 1, 2]))):
        if row:
            draw(damage(row))
    row.update(draw(st.dictionaries(st.text(max_size=8), JUNK, max_size=2)))
    return row


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_schema_returns_records_or_raises_an_mmalign_error(name, data):
    """On anything but an mmalign error the test fails naming the exception. A schema must
    not change the row it reads either (the loaders hand the row on in their messages)."""
    schema = datasets.get(name)
    row = data.draw(rows(READS.get(name)), label="row")
    snapshot = repr(row)
    try:
        records = schema(row, WHERE)
    except MmalignError as error:
        assert str(error), f"{type(error).__name__} without a message"
    except Exception as error:
        raise AssertionError(f"schema '{name}' raised {type(error).__name__}: {error}"[:2000]) from error
    else:
        assert isinstance(records, list), f"returned {type(records).__name__}, not a list"
    assert repr(row) == snapshot, "the schema changed the row it was given"


def test_the_builtin_schemas_are_all_covered():
    """Text, image_diffusion and vision_language schemas are all registered, by modality, so
    all are tested, each with the columns it reads."""
    assert set(READS) <= set(SCHEMAS)
