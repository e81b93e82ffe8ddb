"""Per-row weights (``data.weight_field``) and their two reductions, worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from mmalign.data.split import hold_out
from mmalign.errors import DataError
from mmalign.train import weights

# three rows with losses 1, 2, 4 and weights 1, 0, 3
LOSS = torch.tensor([1.0, 2.0, 4.0])
ROWS = [{"sample_id": f"r{i}", "fields": {"w": w}} for i, w in enumerate((1.0, 0.0, 3.0))]


def test_weighted_mean_by_hand():
    # sum(w * l) / sum(w) = (1*1 + 0*2 + 3*4) / (1 + 0 + 3) = 13 / 4
    w = weights.row_weights(ROWS, "w", "train.jsonl")
    assert weights.reduce(LOSS, None, w, "weighted_mean").item() == pytest.approx(13 / 4)
    # scaling every weight changes nothing
    assert weights.reduce(LOSS, None, 10 * w, "weighted_mean").item() == pytest.approx(13 / 4)


def test_sum_over_batch_by_hand():
    # sum(w * l) / B = (1 + 0 + 12) / 3 = 13 / 3; doubling every weight doubles the loss
    w = weights.row_weights(ROWS, "w", "train.jsonl")
    assert weights.reduce(LOSS, None, w, "sum_over_batch").item() == pytest.approx(13 / 3)
    assert weights.reduce(LOSS, None, 2 * w, "sum_over_batch").item() == pytest.approx(26 / 3)


def test_no_weights_is_the_plain_mean_and_objective_weights_multiply():
    assert weights.reduce(LOSS, None, None).item() == pytest.approx(7 / 3)
    # an objective's reduction weights (0.5, 1, 1) times row weights (1, 0, 3):
    # (0.5*1*1 + 0 + 1*3*4) / (0.5 + 0 + 3) = 12.5 / 3.5
    w = weights.row_weights(ROWS, "w", "train.jsonl")
    got = weights.reduce(LOSS, torch.tensor([0.5, 1.0, 1.0]), w, "weighted_mean").item()
    assert got == pytest.approx(12.5 / 3.5)


@pytest.mark.parametrize("value, said", [(None, "has none"), (-1.0, "-1.0"), (math.nan, "nan")])
def test_a_bad_weight_names_the_row_and_the_field(value, said):
    rows = [{"sample_id": "a", "fields": {"w": 1.0}}, {"sample_id": "b", "fields": {} if value is None else {"w": value}}]
    with pytest.raises(DataError, match=rf"pairs.jsonl: row 'b': data.weight_field 'w' .*{said}"):
        weights.row_weights(rows, "w", "pairs.jsonl")


def test_weights_reach_the_loss_through_the_trainer(make_recipe, tmp_path):
    """A run whose rows all weigh 0 under sum_over_batch has loss 0; under weighted_mean with
    equal weights its first loss is DPO's log 2 (policy equals reference at step 0)."""
    import json

    from mmalign.train.run import train

    rows = [json.loads(line) for line in open(make_recipe().data.train)]
    path = tmp_path / "weighted.jsonl"
    for scale, reduction, first in ((0.0, "sum_over_batch", 0.0), (3.0, "weighted_mean", math.log(2))):
        path.write_text("".join(json.dumps({**r, "w": scale}) + "\n" for r in rows))
        s = train(make_recipe(f"run-{reduction}", data={"train": str(path), "weight_field": "w",
                                                        "weight_reduction": reduction},
                              train={"max_steps": 1}))
        assert s.history[0]["loss"] == pytest.approx(first, abs=1e-6)


def test_hold_out_depends_on_ids_and_seed_only():
    rows = [{"sample_id": f"row-{i}"} for i in range(200)]
    train, held = hold_out(rows, 0.25, seed=0)
    assert len(train) + len(held) == 200 and 30 < len(held) < 70
    again_train, again_held = hold_out(list(reversed(rows)), 0.25, seed=0)
    assert {r["sample_id"] for r in again_held} == {r["sample_id"] for r in held}
    assert {r["sample_id"] for r in hold_out(rows, 0.25, seed=1)[1]} != {r["sample_id"] for r in held}
    assert hold_out(rows[:2], 0.01, seed=0)[1] and hold_out(rows[:2], 0.99, seed=0)[0]
