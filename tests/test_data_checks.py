"""The data checks every run goes through (``mmalign.data.checks.load_checked``): degenerate
rows stop the run naming file, row and field (``data.on_bad_row: error``) or are dropped and
counted (``skip``); exact duplicates are dropped and counted; repairs are counted. Each test
checks the exact message or the exact counts, for text, vision-language and diffusion rows."""
from __future__ import annotations

import io
import json
import logging
import struct
import zlib

import pytest
from PIL import Image

from image_diffusion.diffusion_helpers import pickapic_rows, png, write_parquet
from mmalign.data.checks import load_checked
from mmalign.errors import ConfigError, DataError
from mmalign.modalities.image_diffusion import ImageDiffusionModality
from mmalign.modalities.text import TextModality
from mmalign.modalities.vision_language import VisionLanguageModality
from plugins.test_toy_plugin import install_toy
from vision_language.vl_helpers import QUESTION, tiny_modality, write_rows

SKIP = "set data.on_bad_row: skip to drop and count such rows"


def pair(prompt="p", chosen="good", rejected="bad", **extra) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def message(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    return str(info.value)


def bomb_png() -> bytes:
    """A PNG header of a 14000 x 14000 image: PIL refuses it as a decompression bomb before
    decoding anything, so the test needs no 600 MB of pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 14000, 14000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def tiny_png(size=(1, 1)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (9, 9, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- checks the core makes on any modality's records ------------------------------------------

def test_chosen_equal_to_rejected_stops_the_run_naming_file_row_and_field(write_jsonl):
    path = str(write_jsonl("d.jsonl", [pair(), pair(chosen="same", rejected="same")]))
    assert message(lambda: load_checked(TextModality(), path, None, "error")) == (
        f"{path}, row 1, field 'rejected': is the same as 'chosen', so the pair prefers nothing. "
        f"Fix or remove the row, or {SKIP}")


def test_chosen_equal_to_rejected_is_dropped_and_counted_under_skip(write_jsonl):
    path = str(write_jsonl("d.jsonl", [pair(), pair(chosen="same", rejected="same"), pair(prompt="q")]))
    records, counts = load_checked(TextModality(), path, None, "skip")
    assert [r["sample_id"] for r in records] == ["d.jsonl:0", "d.jsonl:2"]
    assert counts == {"rows_read": 3, "dropped: chosen equals rejected": 1, "records_kept": 2}


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_non_finite_numbers_are_refused_or_counted(write_jsonl, value, shown):
    path = write_jsonl("m.jsonl", [pair(margin=1.0), pair(prompt="q", margin=value)])  # NaN, Infinity in JSON
    assert message(lambda: load_checked(TextModality(), str(path), None, "error")) == (
        f"{path}, row 1, field 'margin': is {shown}, not a finite number. Fix or remove the row, or {SKIP}")
    records, counts = load_checked(TextModality(), str(path), None, "skip")
    assert [r["fields"] for r in records] == [{"margin": 1.0}]
    assert counts == {"rows_read": 2, "dropped: NaN or inf in 'margin'": 1, "records_kept": 1}


def test_exact_duplicate_rows_are_dropped_and_counted_keeping_the_first(write_jsonl):
    rows = [pair(id="a", margin=1.0), pair(id="b"), pair(id="a", margin=1.0), pair(id="a", margin=1.0),
            pair(id="a", margin=2.0),  # the same pair rated again, with another margin
            pair(id="c", margin=1.0)]  # or by another rater: a pair rated twice is kept
    for on_bad_row in ("error", "skip"):
        records, counts = load_checked(TextModality(), str(write_jsonl("d.jsonl", rows)), None, on_bad_row)
        assert [r["sample_id"] for r in records] == ["d.jsonl:0", "d.jsonl:1", "d.jsonl:4", "d.jsonl:5"]
        assert counts == {"rows_read": 6, "deduplicated": 2, "records_kept": 4}


def test_a_row_the_modality_refuses_names_the_skip_setting_or_is_counted(write_jsonl):
    path = str(write_jsonl("d.jsonl", [pair(), pair(chosen="  "), pair(prompt="q"), pair(rejected="")]))
    assert message(lambda: load_checked(TextModality(), path, None, "error")) == (
        f"{path}, row 1, field 'chosen': is empty. Give every row a non-empty 'chosen' or drop the row; "
        f"or {SKIP}")
    records, counts = load_checked(TextModality(), path, None, "skip")
    assert [r["sample_id"] for r in records] == ["d.jsonl:0", "d.jsonl:2"]
    assert counts == {"rows_read": 4, "dropped: chosen: is empty": 1, "dropped: rejected: is empty": 1,
                      "records_kept": 2}


def test_every_count_is_logged(write_jsonl, caplog):
    path = str(write_jsonl("d.jsonl", [pair(), pair(), pair(chosen="x", rejected="x")]))
    with caplog.at_level(logging.INFO, logger="mmalign"):
        load_checked(TextModality(), path, None, "skip")
    assert [r.getMessage() for r in caplog.records if r.name == "mmalign"] == [
        f"{path}: 3 rows read, 1 records kept",
        f"{path}: deduplicated: 1",
        f"{path}: dropped: chosen equals rejected: 1 (first: {path}, row 2, field 'rejected': is the same as "
        f"'chosen', so the pair prefers nothing. Fix or remove the row, or {SKIP})",
    ]


def test_nothing_left_is_an_error_with_the_counts(write_jsonl):
    path = str(write_jsonl("d.jsonl", [pair(chosen="x", rejected="x")]))
    assert message(lambda: load_checked(TextModality(), path, None, "skip")) == (
        f"{path}: no usable rows left after the data checks. Counts: {{'rows_read': 1, "
        "'dropped: chosen equals rejected': 1, 'records_kept': 0}; fix the rows named in the log")


def test_unknown_on_bad_row_is_a_config_error(write_jsonl):
    with pytest.raises(ConfigError, match="data.on_bad_row must be one of error, skip, got 'drop'"):
        load_checked(TextModality(), str(write_jsonl("d.jsonl", [pair()])), None, "drop")


def test_jsonl_that_is_not_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(f"{json.dumps(pair())}\n{{\"prompt\": \"caf\u00e9\", \"chosen\": \"a\", \"rejected\": \"b\"}}\n"
                     .encode("latin-1"))  # the \u00e9 of "café" is byte 16 of line 2
    for on_bad_row in ("error", "skip"):  # the file itself is unreadable: no row to skip
        assert message(lambda: load_checked(TextModality(), str(path), None, on_bad_row)) == (
            f"{path}: line 2 is not valid UTF-8 (byte 0xe9 at byte 16 of the line). Save the file as UTF-8")


def test_a_plugin_whose_load_records_takes_no_checks_still_works(install_dist, write_jsonl, caplog):
    """The example plugin's ``load_records(path, schema)``: the shared checks apply; rows the
    plugin itself refuses still stop the run, even under skip, with the plugin's own message."""
    install_toy(install_dist)
    from mmalign.registry import modalities

    toy = modalities.get("toy")(dim=2)
    rows = [{"chosen": [1.0, 0.0], "rejected": [0.0, 0.0]}, {"chosen": [0.5, 0.5], "rejected": [0.5, 0.5]},
            {"chosen": [1.0, 0.0], "rejected": [0.0, 0.0]}]
    path = str(write_jsonl("v.jsonl", rows))
    with caplog.at_level(logging.WARNING, logger="mmalign"):
        records, counts = load_checked(toy, path, None, "skip")
    assert [r["sample_id"] for r in records] == ["v.jsonl:0"]
    assert counts == {"dropped: chosen equals rejected": 1, "deduplicated": 1, "records_kept": 1}
    assert "this modality's load_records takes no 'checks'" in caplog.text
    bad = str(write_jsonl("bad.jsonl", rows + [{"chosen": [1.0], "rejected": [0.0, 0.0]}]))
    assert message(lambda: load_checked(toy, bad, None, "skip")) == (
        f"{bad}, row 3, field 'chosen': has 1 numbers, expected 2. Give every vector the recipe's dim")


# -- vision-language rows ---------------------------------------------------------------------

def vl_row(image="red.png", chosen="the image is red .", rejected="the image is blue .", **extra) -> dict:
    return {"image": image, "question": QUESTION, "chosen": chosen, "rejected": rejected, **extra}


def test_vl_tiny_image_is_refused_or_counted(tmp_path):
    (tmp_path / "dot.png").write_bytes(tiny_png((1, 1)))
    path = write_rows(tmp_path, "t.jsonl", [vl_row(), vl_row("dot.png"), vl_row("blue.png")])
    assert message(lambda: load_checked(VisionLanguageModality(), path, "rlaif_v", "error")) == (
        f"{path}, row 1, field 'image': image file '{tmp_path / 'dot.png'}': too small to use (1x1 pixels, "
        f"the least is 8x8). Replace it with the full image or drop the row; or {SKIP}")
    records, counts = load_checked(VisionLanguageModality(), path, "rlaif_v", "skip")
    assert [r["row"] for r in records] == [0, 2]
    assert counts == {"rows_read": 3, "dropped: image: image file …: too small to use": 1, "records_kept": 2}


def test_vl_decompression_bomb_names_file_and_row(tmp_path):
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    path = write_rows(tmp_path, "b.jsonl", [vl_row(), vl_row("bomb.png")])
    text = message(lambda: load_checked(VisionLanguageModality(), path, "rlaif_v", "error"))
    assert text.startswith(f"{path}, row 1, field 'image': image file '{tmp_path / 'bomb.png'}': too large to "
                           "decode safely (Image size (196000000 pixels) exceeds limit of ")
    assert text.endswith(f"pixels or drop the row; or {SKIP}")
    _, counts = load_checked(VisionLanguageModality(), path, "rlaif_v", "skip")
    assert counts == {"rows_read": 2, "dropped: image: image file …: too large to decode safely": 1,
                      "records_kept": 1}


def test_vl_degenerate_pairs_duplicates_and_repairs_are_counted(tmp_path):
    Image.new("RGBA", (32, 32), (200, 10, 10, 0)).save(tmp_path / "clear.png")
    rows = [vl_row(), vl_row(), vl_row(rejected="the image is red ."), vl_row("clear.png"), vl_row(margin=float("nan"))]
    path = write_rows(tmp_path, "v.jsonl", rows)  # json.dumps writes the NaN as NaN
    modality = VisionLanguageModality()
    records, counts = load_checked(modality, path, "rlaif_v", "skip")
    assert [r["row"] for r in records] == [0, 3]
    assert counts == {"rows_read": 5, "repaired: RGBA to RGB": 1, "deduplicated": 1,
                      "dropped: chosen equals rejected": 1, "dropped: NaN or inf in 'margin'": 1, "records_kept": 2}
    assert modality.repairs["repaired: RGBA to RGB"] == 1


def test_vl_nan_rating_does_not_make_pairs(tmp_path):
    def completion(response, rating):
        return {"response": response, "annotations": {"Helpfulness": {"Rating": rating}}}

    good = {"prompt": "Describe.", "image": "red.png", "completions": [completion("red", "5"), completion("blue", "1")]}
    bad = {**good, "completions": [completion("red", "5"), completion("blue", "nan"), completion("green", "1")]}
    path = write_rows(tmp_path, "f.jsonl", [good, bad])
    assert message(lambda: load_checked(VisionLanguageModality(), path, "vlfeedback", "error")).startswith(
        f"{path}, row 1, field 'completions[1]': ")
    records, counts = load_checked(VisionLanguageModality(), path, "vlfeedback", "skip")
    assert [(r["chosen"], r["rejected"], r["fields"]["margin"]) for r in records] == [("red", "blue", 4.0)]
    dropped = {k: v for k, v in counts.items() if k.startswith("dropped: ")}
    assert list(dropped.values()) == [1] and next(iter(dropped)).startswith("dropped: completions[*]: ")
    assert (counts["rows_read"], counts["records_kept"]) == (2, 1)


def test_vl_tokenizer_truncations_are_counted(tmp_path):
    modality, _ = tiny_modality(max_length=28)  # the prompt is 26 tokens: 2 per response
    path = write_rows(tmp_path, "t.jsonl", [vl_row()])
    _, counts = load_checked(modality, path, "rlaif_v", "error")
    assert counts == {"rows_read": 1, "responses truncated to max_length": 2, "records_kept": 1}


# -- image-diffusion rows ---------------------------------------------------------------------

def diffusion_file(tmp_path, rows) -> str:
    return write_parquet(tmp_path / "pairs.parquet", rows)


def test_empty_caption_is_refused_unless_unconditional_rows_are_wanted(tmp_path):
    rows = pickapic_rows(3)
    rows[1]["caption"] = " "
    path = diffusion_file(tmp_path, rows)
    assert message(lambda: load_checked(ImageDiffusionModality(resolution=32), path, "pickapic", "error")) == (
        f"{path}, row 1, field 'caption': is empty. Give the row a caption, or set "
        f"model.options.allow_empty_captions: true to train such rows unconditionally; or {SKIP}")
    _, counts = load_checked(ImageDiffusionModality(resolution=32), path, "pickapic", "skip")
    assert counts == {"rows_read": 3, "dropped: caption: is empty": 1, "records_kept": 2}
    records, _ = load_checked(ImageDiffusionModality(resolution=32, allow_empty_captions=True), path, "pickapic",
                              "error")
    assert [r["prompt"] for r in records] == ["cube 0", " ", "cube 2"]


def test_empty_prompt_of_generic_pairs_names_the_prompt_field(tmp_path):
    path = diffusion_file(tmp_path, [{"prompt": "", "chosen": png(), "rejected": png((0, 0, 9))}])
    assert message(lambda: load_checked(ImageDiffusionModality(resolution=32), path, "image_pairs", "error")
                   ).startswith(f"{path}, row 0, field 'prompt': is empty. ")


@pytest.mark.parametrize("image, reason", [
    (tiny_png((4, 4)), "too small to use (4x4 pixels, the least is 8x8)"),
    (bomb_png(), "too large to decode safely (Image size (196000000 pixels) exceeds limit of "),
], ids=["tiny", "bomb"])
def test_diffusion_tiny_images_and_bombs(tmp_path, image, reason):
    rows = pickapic_rows(2)
    rows[1]["jpg_1"] = image
    path = diffusion_file(tmp_path, rows)
    text = message(lambda: load_checked(ImageDiffusionModality(resolution=32), path, "pickapic", "error"))
    assert text.startswith(f"{path}, row 1, field 'jpg_1': the image bytes: {reason}")
    _, counts = load_checked(ImageDiffusionModality(resolution=32), path, "pickapic", "skip")
    key = f"dropped: jpg_1: the image bytes: {reason.split(' (')[0]}"
    assert counts == {"rows_read": 2, key: 1, "records_kept": 1}


def test_diffusion_identical_images_duplicates_ties_and_repairs_are_counted(tmp_path):
    rows = pickapic_rows(3)
    rows[1]["jpg_1"] = rows[1]["jpg_0"]  # the same bytes on both sides
    rows.append(dict(rows[0]))  # an exact duplicate of row 0
    rows.append(dict(caption="tie", jpg_0=png(), jpg_1=png((0, 0, 9)), label_0=0.5))
    rows.append(dict(caption="clear", jpg_0=png((10, 20, 30, 0), mode="RGBA"), jpg_1=png(), label_0=1.0))
    path = diffusion_file(tmp_path, rows)
    assert message(lambda: load_checked(ImageDiffusionModality(resolution=32), path, "pickapic", "error")) == (
        f"{path}, row 1, field 'rejected': is the same as 'chosen', so the pair prefers nothing. "
        f"Fix or remove the row, or {SKIP}")
    records, counts = load_checked(ImageDiffusionModality(resolution=32), path, "pickapic", "skip")
    assert [r["row"] for r in records] == [0, 2, 5]
    assert counts == {"rows_read": 6, "dropped: tie (keep_ties is off)": 1, "repaired: RGBA to RGB": 1,
                      "dropped: chosen equals rejected": 1, "deduplicated": 1, "records_kept": 3}
