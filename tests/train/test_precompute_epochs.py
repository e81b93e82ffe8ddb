"""A precomputed reference stores one epoch when the modality's draws do not change between
epochs for the needs in use, and one value per row and epoch when they do."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vision_language"))
from vl_helpers import vl_recipe, write_colour_set  # noqa: E402

from mmalign.train.run import train  # noqa: E402


def _store(run_dir: Path) -> tuple[dict, set[str]]:
    from safetensors import safe_open

    (folder,) = [p for p in (run_dir / "precomputed").iterdir() if p.is_dir()]
    rows = set()
    for shard in folder.glob("shard-*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            rows |= {key.rsplit("/", 1)[0] for key in f.keys()}
    return json.loads((folder / "done.json").read_text()), rows


@pytest.mark.parametrize("objective, epochs", [("dpo", 1), ("mdpo", 2)])
def test_vision_language_store_holds_one_epoch_for_plain_dpo(tmp_path, objective, epochs):
    data = write_colour_set(tmp_path / "data")  # 8 rows; batch 4: an epoch is 2 steps
    recipe = vl_recipe(tmp_path / objective, data, objective={"name": objective, "params": {"beta": 0.5}},
                       reference={"strategy": "precomputed"}, train={"max_steps": 4, "batch_size": 4})
    train(recipe)
    meta, rows = _store(tmp_path / objective)
    assert meta["epochs"] == epochs
    assert len(rows) == 8 * epochs
    assert {row.rsplit("@", 1)[1] for row in rows} == {str(e) for e in range(epochs)}
