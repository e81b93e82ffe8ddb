"""Data loading: the schemas, and bad input named by file, row and field, or repaired and counted."""
from __future__ import annotations

import json

import pytest
import torch

from mmalign.data.checks import load_checked
from mmalign.config import validate_options
from mmalign.errors import ConfigError, DataError
from mmalign.modality import check_needs
from mmalign.modalities.image_diffusion import ImageDiffusionModality
from mmalign.modalities.image_diffusion.options import DiffusionOptions

from diffusion_helpers import make_modality, pickapic_rows, png, write_parquet


def load(tmp_path, rows, schema="pickapic", **options):
    path = write_parquet(tmp_path / "data.parquet", rows)
    modality, _ = make_modality(**options)
    return modality, modality.load_records(path, schema), path


def test_pickapic_puts_the_winner_first_and_drops_ties(tmp_path):
    rows = pickapic_rows(3)  # labels 1, 0, 1
    rows.append(dict(caption="tie", jpg_0=png(), jpg_1=png((0, 0, 9)), label_0=0.5))
    modality, records, _ = load(tmp_path, rows)
    assert [r["sample_id"] for r in records] == ["data.parquet#0", "data.parquet#1", "data.parquet#2"]
    assert records[0]["images"] == [rows[0]["jpg_0"], rows[0]["jpg_1"]]  # label_0 = 1: jpg_0 wins
    assert records[1]["images"] == [rows[1]["jpg_1"], rows[1]["jpg_0"]]  # label_0 = 0: jpg_1 wins
    assert modality.counts["dropped: tie (keep_ties is off)"] == 1


def test_keep_ties_keeps_and_marks_them(tmp_path):
    rows = [dict(caption="tie", jpg_0=png(), jpg_1=png((0, 0, 9)), label_0=0.5)]
    modality, records, _ = load(tmp_path, rows, keep_ties=True)
    assert len(records) == 1 and records[0]["tie"]
    assert modality.collate(records).fields["tie"].tolist() == [1.0]


def test_corrupt_image_bytes_name_file_row_and_field(tmp_path):
    rows = pickapic_rows(3)
    rows[2]["jpg_1"] = b"\x89PNG not really an image"
    with pytest.raises(DataError) as err:
        load(tmp_path, rows)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'data.parquet'}, row 2, field 'jpg_1': cannot decode the image bytes")
    assert "Replace the image with a valid PNG / JPEG / WebP file or drop the row" in text


def test_on_bad_row_skip_drops_and_counts_undecodable_rows(tmp_path):
    rows = pickapic_rows(3)
    rows[1]["jpg_0"] = b"garbage"
    modality = ImageDiffusionModality(resolution=32)
    records, counts = load_checked(modality, write_parquet(tmp_path / "data.parquet", rows), "pickapic", "skip")
    assert [r["row"] for r in records] == [0, 2]
    assert counts == {"rows_read": 3, "dropped: jpg_0: cannot decode the image bytes": 1, "records_kept": 2}


def test_on_bad_row_skip_leaving_no_row_names_the_counts(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "label_0"} for r in pickapic_rows(2)]
    with pytest.raises(DataError) as err:
        load_checked(ImageDiffusionModality(resolution=32), write_parquet(tmp_path / "data.parquet", rows),
                     "pickapic", "skip")
    assert str(err.value) == (f"{tmp_path / 'data.parquet'}: no usable rows. Counts: {{'rows_read': 2, "
                              "'dropped: label_0: missing column …': 2}; check the schema and the data")


def test_the_old_skip_bad_rows_option_names_its_successor():
    with pytest.raises(ConfigError, match=r"model.options.skip_bad_rows is no longer an option: "
                                          r"set data.on_bad_row: skip to drop and count rows"):
        ImageDiffusionModality(skip_bad_rows=True)


def test_label_outside_the_allowed_values(tmp_path):
    rows = pickapic_rows(2)
    rows[1]["label_0"] = 0.7
    with pytest.raises(DataError) as err:
        load(tmp_path, rows)
    assert str(err.value).startswith(f"{tmp_path / 'data.parquet'}, row 1, field 'label_0': label 0.7 is not one of 0, 0.5, 1")


def test_rgba_and_grayscale_are_converted_and_counted(tmp_path):
    rows = pickapic_rows(2)
    rows[0]["jpg_0"] = png((10, 20, 30, 0), mode="RGBA")
    rows[1]["jpg_1"] = png(128, mode="L")
    modality, records, _ = load(tmp_path, rows)
    assert (modality.counts["repaired: RGBA to RGB"], modality.counts["repaired: L to RGB"]) == (1, 1)
    batch = modality.collate(records)
    assert all(im.mode == "RGB" for pair in batch.inputs["images"] for im in pair)
    # a fully transparent pixel is composited on white
    assert batch.inputs["images"][0][0].getpixel((0, 0)) == (255, 255, 255)


def test_overlong_captions_are_counted_and_truncated(tmp_path):
    rows = pickapic_rows(2)
    rows[0]["caption"] = "word " * 40  # the tiny CLIP tokenizer takes 16 tokens
    modality, records, _ = load(tmp_path, rows)
    assert modality.counts["repaired: caption truncated"] == 1
    policy_free = modality.collate(records)
    draw = modality.draw(policy_free, 0, None)
    frozen = modality._frozen(policy_free, draw)  # text embeddings of the batch, in batch.frozen
    assert frozen.prompt_embeds.shape[1] == 16


def test_generic_pairs_from_an_image_folder(tmp_path):
    (tmp_path / "a.png").write_bytes(png((1, 2, 3)))
    (tmp_path / "b.png").write_bytes(png((200, 2, 3)))
    lines = [{"prompt": "a tiny square", "chosen": "a.png", "rejected": "b.png"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    modality, _ = make_modality()
    records = modality.load_records(str(tmp_path), "image_pairs")
    assert records[0]["images"] == [(tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()]
    assert records[0]["prompt"] == "a tiny square"


def test_generic_pairs_missing_file_is_named(tmp_path):
    lines = [{"prompt": "p", "chosen": "nowhere.png", "rejected": "b.png"}]
    (tmp_path / "pairs.jsonl").write_text(json.dumps(lines[0]))
    modality, _ = make_modality()
    with pytest.raises(DataError, match=r"pairs.jsonl, row 0, field 'chosen': image file .*nowhere.png' does not exist"):
        modality.load_records(str(tmp_path / "pairs.jsonl"), "image_pairs")


def test_unpaired_labels_schema(tmp_path):
    rows = [{"prompt": "p", "image": png(), "label": 1}, {"prompt": "q", "image": png((0, 9, 9)), "label": 0}]
    modality, records, _ = load(tmp_path, rows, schema="image_labels")
    batch = modality.collate(records)
    assert batch.fields["label"].tolist() == [1.0, 0.0]
    rows[1]["label"] = 3
    with pytest.raises(DataError, match="row 1, field 'label': label 3 is not 0 or 1"):
        load(tmp_path, rows, schema="image_labels")


def test_bad_options_are_config_errors_named_by_field():
    """The options are the pydantic ``Options`` model the core validates; its errors name
    ``model.options.<field>``, the value and what was expected."""
    assert ImageDiffusionModality.Options is DiffusionOptions
    cases = {"caption_dropout": (1.5, r"Input should be less than or equal to 1 \(got 1.5\)"),
             "draw": ("ddim", r"Input should be 'forward' or 'inversion'"),
             "resolution": (36, r"Input should be a multiple of 8"),
             "cache": (1, r"Input should be a valid boolean"),
             "no_such_option": (1, r"Extra inputs are not permitted")}
    for name, (value, message) in cases.items():
        with pytest.raises(ConfigError, match=rf"model.options.{name}: {message}"):
            ImageDiffusionModality(**{name: value})
    # the core validates the same model before building the modality
    assert validate_options(DiffusionOptions, {"resolution": 32}, "image_diffusion")["resolution"] == 32


def test_unknown_need_is_refused_by_the_core_check():
    """One needs check, the core's, at build time; the surrogate does not check again."""
    modality, _ = make_modality()
    with pytest.raises(ConfigError, match="modality 'image_diffusion' cannot provide vocab_logps"):
        check_needs(modality, frozenset({"vocab_logps", "fields:margin"}), "image_diffusion")
    check_needs(modality, frozenset({"label", "terms:kl_mismatched", "fields:margin"}), "image_diffusion")
    assert modality.draws_per_epoch(frozenset()) is True  # t and noise are drawn anew every epoch


def test_labels_with_paired_rows_are_refused_at_surrogate_time(pickapic_file):
    modality, policy = make_modality()
    batch = modality.collate(modality.load_records(pickapic_file, "pickapic"))
    assert torch.is_tensor(batch.fields["tie"]) and "label" not in batch.fields
    with pytest.raises(ConfigError, match="needs labelled unpaired rows .* set model.options.pairing: unpaired"):
        modality.surrogate(policy, batch, modality.draw(batch, 0, policy), frozenset({"label"}))


def test_schemas_are_namespaced_and_return_plain_dicts_with_fields(tmp_path):
    """Registered as ``image_diffusion:<name>``; the bare name still finds them. A record keeps
    the row's other numeric columns in ``fields`` (a weight column for data.weight_field)."""
    from mmalign.data.io import RowRef
    from mmalign.registry import datasets

    for name in ("pickapic", "image_pairs", "image_labels"):
        assert datasets.get(f"image_diffusion:{name}") is datasets.get(name)
    row = dict(pickapic_rows(1)[0], weight=2.5, user_id=7, has_label=True, note="text")
    [example] = datasets.get("image_diffusion:pickapic")(row, RowRef("f.parquet", 0))
    assert type(example) is dict and example["fields"] == {"weight": 2.5, "user_id": 7.0}
    modality, records, _ = load(tmp_path, [row, dict(row, weight=0.5)])
    assert [r["fields"] for r in records] == [{"weight": 2.5, "user_id": 7.0}, {"weight": 0.5, "user_id": 7.0}]
    assert modality.collate(records).fields["weight"].tolist() == [2.5, 0.5]
