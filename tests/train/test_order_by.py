"""``data.order_by``: a curriculum order of the training rows (e.g. TEMPLE's large-to-small
perturbations), by a numeric column, worked out by hand and seen by the trainer."""
from __future__ import annotations

import json

import pytest

from mmalign.errors import ConfigError, DataError
from mmalign.train.order import sort_rows
from mmalign.train.run import build, make_order

ROWS = [{"sample_id": f"r{i}", "fields": {"m": m}} for i, m in enumerate((4.0, 16.0, 2.0, 16.0, 8.0))]


def test_sort_rows_by_hand():
    # ascending by m: 2 (r2), 4 (r0), 8 (r4), 16 (r1), 16 (r3): ties keep the file order
    assert [r["sample_id"] for r in sort_rows(ROWS, "m", "t.jsonl")] == ["r2", "r0", "r4", "r1", "r3"]
    # descending: 16 (r1), 16 (r3), 8 (r4), 4 (r0), 2 (r2)
    assert [r["sample_id"] for r in sort_rows(ROWS, "-m", "t.jsonl")] == ["r1", "r3", "r4", "r0", "r2"]
    assert sort_rows(ROWS, None, "t.jsonl") == ROWS


def test_a_row_without_the_field_is_named():
    with pytest.raises(DataError, match="row 'r1': data.order_by field 'm' has none"):
        sort_rows([ROWS[0], {"sample_id": "r1", "fields": {}}], "m", "t.jsonl")


def test_order_by_with_shuffle_is_refused(make_recipe):
    with pytest.raises(ConfigError, match="set train.shuffle: false"):
        make_recipe(data={"order_by": "-m"})


def test_the_trainer_visits_rows_in_the_curriculum_order(make_recipe, tmp_path):
    rows = [{"prompt": f"q{k}", "chosen": "yes good", "rejected": "no bad", "m": m}
            for k, m in enumerate((1, 3, 2, 5, 4, 0, 7, 6))]
    path = tmp_path / "curriculum.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    session = build(make_recipe(data={"train": str(path), "eval": None, "order_by": "-m"},
                                train={"shuffle": False, "batch_size": 2}))
    assert [r["fields"]["m"] for r in session.train_records] == [7, 6, 5, 4, 3, 2, 1, 0]
    _, first = make_order(session).rows(0, 0, 0)  # the first step's batch: the largest two
    assert [session.train_records[i]["fields"]["m"] for i in first] == [7, 6]
