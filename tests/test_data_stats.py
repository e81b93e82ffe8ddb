"""``mmalign data stats``: per data file rows, records, token lengths and the modality's own
figures; and the vision-language figures (images, clips, tokens per image / clip)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmalign.cli import main
from mmalign.data.stats import summary, token_lengths
from mmalign.modalities.vision_language.stats import media_token_stats, token_runs
from mmalign.surrogate import Batch

ROOT = Path(__file__).resolve().parents[1]


def recipe_file(tmp_path, data: dict | None = None) -> Path:
    """The tiny text DPO recipe on the shipped colour preferences (or ``data``)."""
    raw = yaml.safe_load((ROOT / "configs/demo_text_dpo.yaml").read_text())
    raw["data"] = data or {"train": str(ROOT / "assets/text_prefs/train.jsonl"),
                           "eval": str(ROOT / "assets/text_prefs/eval.jsonl"), "schema": "preference"}
    raw["model"]["builder_args"] = {"hidden_size": 16, "layers": 1, "heads": 2}
    raw["logging"] = {"output_dir": str(tmp_path / "run"), "tensorboard": False, "progress": False}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# -- the command ---------------------------------------------------------------------------------

def test_stats_table_of_the_text_recipe(tmp_path, capsys):
    assert main(["data", "stats", str(recipe_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("modality: text\n")
    assert f"data.train: {ROOT / 'assets/text_prefs/train.jsonl'}\n  rows 64, records 64\n" in out
    assert "data.eval:" in out and "  rows 32, records 32\n" in out
    for name in ("prompt", "chosen", "rejected"):
        assert f"\n  {name} " in out
    assert not (tmp_path / "run").exists()  # a look at the data writes no run folder


def test_stats_json_counts_checks_and_calls_the_modality_hook(tmp_path, capsys, monkeypatch, write_jsonl):
    from mmalign.modalities.text.modality import TextModality

    rows = [{"prompt": "Give me one colour.", "chosen": "red", "rejected": "teal"},
            {"prompt": "Give me one colour.", "chosen": "red", "rejected": "teal"},  # a duplicate: dropped
            {"prompt": "Paint the wall.", "chosen": "amber", "rejected": "amber"},  # prefers nothing: dropped
            {"prompt": "Paint the long wall please.", "chosen": "crimson red", "rejected": "green"}]
    data = {"train": str(write_jsonl("rows.jsonl", rows)), "schema": "preference", "on_bad_row": "skip"}
    seen = []
    monkeypatch.setattr(TextModality, "stats", lambda self, records: seen.append(len(records)) or {"kind": "text"},
                        raising=False)
    assert main(["data", "stats", str(recipe_file(tmp_path, data)), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    train = result["files"]["train"]
    assert (result["modality"], list(result["files"]), train["rows"], train["records"]) == ("text", ["train"], 4, 2)
    assert train["checks"] == {"deduplicated": 1, "dropped: chosen equals rejected": 1}
    assert train["modality"] == {"kind": "text"} and seen == [2]
    prompt, chosen = train["tokens"]["prompt"], train["tokens"]["chosen"]
    assert prompt["min"] < prompt["max"] and prompt["median"] == (prompt["min"] + prompt["max"]) / 2
    assert chosen["min"] < chosen["max"]  # "red" and "crimson red"


def test_bad_recipe_and_missing_data_are_exit_2(tmp_path, capsys):
    path = recipe_file(tmp_path)
    assert main(["data", "stats", str(path), "train.lrr=1"]) == 2
    assert capsys.readouterr().err.startswith(f"mmalign data: error: {path}: unknown key 'train.lrr'")
    assert main(["data", "stats", str(path), f"data.train={tmp_path / 'none.jsonl'}"]) == 2
    assert f"{tmp_path / 'none.jsonl'}: no such file" in capsys.readouterr().err


def test_bad_row_is_exit_2_naming_file_row_and_field(tmp_path, capsys, write_jsonl):
    bad = write_jsonl("bad.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "b"}])
    assert main(["data", "stats", str(recipe_file(tmp_path, {"train": str(bad), "schema": "preference"}))]) == 2
    assert f"{bad}, row 1, field 'rejected': is missing" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code", [(["data", "--help"], 0), (["data", "stats", "--help"], 0), (["data"], 2)])
def test_help_and_a_missing_sub_command(argv, code, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == code
    if code == 0:
        assert "usage: mmalign data" in capsys.readouterr().out


# -- token lengths -----------------------------------------------------------------------------

class Collating:
    """A modality whose records hold no ids: its batches may (a text model) or may not."""

    def __init__(self, tokens: bool):
        self.tokens, self.calls = tokens, 0

    def collate(self, records):
        self.calls += 1
        if not self.tokens:
            return Batch(inputs={"pixels": [r["n"] for r in records]}, sample_id=[str(r["n"]) for r in records])
        return Batch(inputs={"prompt_ids": [[0] * r["n"] for r in records], "completion_ids": [[1] for _ in records]},
                     sample_id=[str(r["n"]) for r in records])


def test_token_lengths_from_records_then_from_batches():
    records = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4], "rejected_ids": [5, 6]},
               {"prompt_ids": [1], "chosen_ids": [4, 4, 4], "rejected_ids": [5]}]
    assert token_lengths(object(), records) == {"prompt": [3, 1], "chosen": [1, 3], "rejected": [2, 1]}
    many = [{"n": n} for n in range(1, 131)]
    with_ids = Collating(tokens=True)
    lengths = token_lengths(with_ids, many)
    assert lengths == {"prompt": list(range(1, 131)), "completion": [1] * 130} and with_ids.calls == 3
    without = Collating(tokens=False)
    assert token_lengths(without, many) == {} and without.calls == 1  # one batch says there are none
    assert summary([3, 1, 2, 10]) == {"min": 1, "median": 2.5, "max": 10}


# -- vision-language figures -------------------------------------------------------------------

IMAGE, VIDEO = 9, 8


def test_media_token_stats_counts_runs_as_images_and_clips():
    records = [{"prompt_ids": [1, IMAGE, IMAGE, IMAGE, 2, IMAGE, IMAGE, 3, VIDEO, VIDEO, VIDEO, VIDEO]},
               {"prompt_ids": [IMAGE, IMAGE, IMAGE, IMAGE, IMAGE, 4]},
               {"prompt_ids": [5, 6]}, {"sample_id": "not tokenized"}]
    assert media_token_stats(records, IMAGE, VIDEO) == {
        "images": 3, "tokens_per_image_min": 2, "tokens_per_image_median": 3, "tokens_per_image_max": 5,
        "clips": 1, "tokens_per_clip_min": 4, "tokens_per_clip_median": 4, "tokens_per_clip_max": 4}


def test_media_token_stats_leaves_out_a_kind_without_a_token_id_and_empty_figures():
    records = [{"prompt_ids": [IMAGE, IMAGE, 1, VIDEO]}]
    assert media_token_stats(records, IMAGE, None) == {
        "images": 1, "tokens_per_image_min": 2, "tokens_per_image_median": 2, "tokens_per_image_max": 2}
    assert media_token_stats(records, None, 7) == {"clips": 0}
    assert media_token_stats([], None, None) == {}
    assert token_runs([IMAGE, 1, IMAGE, IMAGE, IMAGE], IMAGE) == [1, 3] and token_runs([], IMAGE) == []


def test_vision_language_recipe_reports_its_images(tmp_path, monkeypatch):
    """End to end on the tiny LLaVA: the modality's hook gives the images and their tokens."""
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "vision_language"))
    from vl_helpers import vl_recipe, write_colour_set

    from mmalign.data.stats import data_stats

    result = data_stats(vl_recipe(tmp_path / "run", write_colour_set(tmp_path / "data")))
    train = result["files"]["train"]
    assert result["modality"] == "vision_language" and train["records"] == train["rows"] > 0
    figures = train["modality"]
    assert figures["images"] == train["records"]  # one image a row
    assert figures["tokens_per_image_min"] == figures["tokens_per_image_max"] > 0
    assert train["tokens"]["prompt"]["min"] > figures["tokens_per_image_max"]
