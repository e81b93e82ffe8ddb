"""The bad-input corpus (``tests/bad_inputs/cases.yaml``): every case runs through
``mmalign train`` and must get its declared outcome: a named error (exit 2 for input, 1 for
the environment) that names the file, row or key, or the row dropped or repaired and counted.
Never a traceback, never a silent acceptance."""
from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mmalign import config
from mmalign.cli import main

HERE = Path(__file__).resolve().parent
CASES = yaml.safe_load((HERE / "bad_inputs" / "cases.yaml").read_text())
COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (230, 230, 40)]

TEXT_ROWS = [{"prompt": f"Pick colour {i}", "chosen": f"red {i}", "rejected": f"blue {i}"} for i in range(6)]
UNPAIRED_ROWS = [{"prompt": f"Pick colour {i}", "completion": f"red {i}", "label": i % 2 == 0} for i in range(6)]
VL_ROWS = [{"image": f"good{i}.png", "question": "What is there?", "chosen": f"a shape {i}",
            "rejected": f"a cat {i}"} for i in range(4)]
DIFFUSION_ROWS = [{"prompt": "a red circle", "chosen": "good0.png", "rejected": "good1.png"},
                  {"prompt": "a blue square", "chosen": "good2.png", "rejected": "good3.png"}]
COMMON = {"objective": {"name": "dpo", "params": {"beta": 0.5}}, "eval": {"every": 0},
          "logging": {"every": 1, "tensorboard": False, "progress": False}}
BASES = {
    "text": ({"model": {"modality": "text", "builder": "tiny_llama",
                        "builder_args": {"hidden_size": 16, "layers": 1, "heads": 2},
                        "lora": {"r": 4, "alpha": 8}, "options": {"max_length": 48}},
              "data": {"schema": "preference"},
              "train": {"max_steps": 1, "batch_size": 2, "lr": 1e-3}}, TEXT_ROWS),
    "text_unpaired": ({"model": {"modality": "text", "builder": "tiny_llama",
                                 "builder_args": {"hidden_size": 16, "layers": 1, "heads": 2},
                                 "options": {"max_length": 48}},
                       "data": {"schema": "unpaired"}, "objective": {"name": "kto", "params": {"beta": 0.1}},
                       "train": {"max_steps": 1, "batch_size": 2, "lr": 1e-3}}, UNPAIRED_ROWS),
    "vision_language": ({"model": {"modality": "vision_language", "builder": "tiny_llava", "builder_args": {},
                                   "lora": {"r": 4, "alpha": 8}, "options": {"max_length": 64}},
                         "data": {"schema": "rlaif_v"},
                         "train": {"max_steps": 1, "batch_size": 2, "lr": 1e-3}}, VL_ROWS),
    "image_diffusion": ({"model": {"modality": "image_diffusion", "builder": "tiny_sd15",
                                   "lora": {"r": 4, "alpha": 8},
                                   "options": {"resolution": 32, "cache": True, "sample_steps": 2}},
                         "data": {"schema": "image_pairs"}, "objective": {"name": "dpo", "params": {"beta": 5000}},
                         "train": {"max_steps": 1, "batch_size": 2, "lr": 1e-3}}, DIFFUSION_ROWS),
}


def write_rows(path: Path, rows: list) -> None:
    # json.dumps writes NaN as NaN, which our reader (Python's json) reads back as float nan
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_image(path: Path, spec: dict, folder: Path) -> None:
    if spec.get("garbage"):
        path.write_bytes(b"this is not an image at all")
    elif spec.get("truncated"):
        Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
        path.write_bytes(path.read_bytes()[:40])
    elif "copy_of" in spec:
        path.write_bytes((folder / spec["copy_of"]).read_bytes())
    else:
        mode = spec.get("mode", "RGB")
        colour = {"RGB": (200, 10, 10), "RGBA": (10, 10, 200, 120), "L": 90}[mode]
        Image.new(mode, tuple(spec["size"]), colour).save(path)


def make_data(case: dict, folder: Path, kind: str) -> Path:
    """Good rows (and their images) plus the case's rows; returns the training file."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (32, 32), colour).save(folder / f"good{i}.png")
    for name, spec in (case.get("images") or {}).items():
        write_image(folder / name, spec, folder)
    train = folder / "train.jsonl"
    if "raw_bytes_hex" in case:
        train.write_bytes(bytes.fromhex(case["raw_bytes_hex"]))
    elif "raw" in case:
        train.write_text(case["raw"], encoding="utf-8")
    else:
        rows = case["raw_rows"] if "raw_rows" in case else BASES[kind][1] + list(case.get("rows") or [])
        write_rows(train, rows)
    if "eval_rows" in case:
        write_rows(folder / "eval.jsonl", BASES[kind][1][:2] + case["eval_rows"])
    return train


def base_recipe(kind: str, train: Path, out: Path, folder: Path, case: dict) -> dict:
    raw = config.merge(COMMON, BASES[kind][0])
    raw = config.merge(raw, {"data": {"train": str(train)}, "logging": {"output_dir": str(out)}})
    if "eval_rows" in case:
        raw = config.merge(raw, {"data": {"eval": str(folder / "eval.jsonl")}})
    return config.merge(raw, case.get("recipe") or {})


# -- faults of the environment, prepared before the run --------------------------------------

def finished_run(raw: dict, tmp: Path) -> dict:
    """A one-step run with a checkpoint in the recipe's output folder."""
    first = config.merge(raw, {"train": {"save_every": 1}})
    path = tmp / "first.yaml"
    path.write_text(yaml.safe_dump(first))
    assert main(["train", str(path)]) == 0
    return first


def setup_fault(name: str | None, raw: dict, tmp: Path, stack) -> tuple[dict, Path | None]:
    """Prepare fault ``name``; returns the recipe to run and, for recipe_missing, its path."""
    out = Path(raw["logging"]["output_dir"])
    if name == "recipe_missing":
        return raw, tmp / "no_such_recipe.yaml"
    if name == "corrupt_text_model":
        from mmalign.models.text import tiny_llama, tiny_tokenizer

        folder = tmp / "model"
        tiny_llama(hidden_size=16, layers=1, heads=2).save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
        (folder / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
        return config.merge(raw, {"model": {"builder": None, "builder_args": None, "path": str(folder)}}), None
    if name in ("truncated_checkpoint", "pickled_checkpoint"):
        first = finished_run(raw, tmp)
        ckpt = out / "checkpoints" / "step-0000001"
        if name == "truncated_checkpoint":
            policy = ckpt / "policy.safetensors"
            policy.write_bytes(policy.read_bytes()[:30])
        else:
            (ckpt / "trainer.pt").write_bytes(b"\x80\x04\x95 a pickle is never opened")
        return config.merge(first, {"train": {"resume_from": str(out), "max_steps": 2}}), None
    if name == "output_is_a_file":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("a file where the run folder should be")
        return config.merge(raw, {"logging": {"output_dir": str(out / "run")}}), None
    if name == "lock_held":
        from mmalign.train.rundir import RunLock

        stack.callback(RunLock(out).release)
        return raw, None
    if name == "finished_run":
        finished_run(raw, tmp)
        return raw, None
    if name in ("tiny_tmpfs", "read_only_tmpfs"):
        mount = tmp / "mnt"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)],
                          capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs needs root; the checkpoint tests simulate these faults instead")
        stack.callback(lambda: subprocess.run(["umount", "-l", str(mount)], capture_output=True))
        if name == "read_only_tmpfs":
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        # full fine-tuning: the trained weights alone are larger than the disk
        return config.merge(raw, {"model": {"lora": None}, "reference": {"strategy": "copy"},
                                  "logging": {"output_dir": str(mount / "run")}}), None
    assert name is None, f"unknown setup {name}"
    return raw, None


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, tmp_path, capsys, caplog, monkeypatch):
    import contextlib

    monkeypatch.chdir(tmp_path)
    kind = case.get("kind", "text")
    folder, out = tmp_path / "data", tmp_path / "out"
    train = make_data(case, folder, kind)
    raw = base_recipe(kind, train, out, folder, case)
    expect = case["expect"]
    with contextlib.ExitStack() as stack, caplog.at_level(logging.INFO, logger="mmalign"):
        raw, recipe_path = setup_fault(case.get("setup"), raw, tmp_path, stack)
        if recipe_path is None:
            recipe_path = tmp_path / "recipe.yaml"
            text = case.get("recipe_text")
            recipe_path.write_text(text.replace("{train}", str(train)).replace("{out}", str(out))
                                   if text is not None else yaml.safe_dump(raw))
        capsys.readouterr()
        code = main(["train", str(recipe_path), *case.get("args", [])])
    err = capsys.readouterr().err
    said = err + caplog.text
    assert "Traceback" not in said, said[-3000:]
    assert not any(r.exc_info for r in caplog.records), "an exception was logged with its traceback"
    assert code == expect["exit"], said[-3000:]
    for text in expect.get("says", []):
        assert text in err, f"{text!r} not in: {err[-2000:]}"
    if expect["exit"] != 0:
        named = expect.get("names") or (recipe_path.name if case["id"].startswith("recipe") else
                                        "eval.jsonl" if "eval_rows" in case else
                                        "train.jsonl" if not case.get("setup") else "")
        assert named in err, f"the message names no {named!r}: {err[-2000:]}"
        return
    run_dir = Path(raw.get("logging", {}).get("output_dir", out)) if "recipe_text" not in case else out
    counts = json.loads((run_dir / "data_report.json").read_text())["train"]
    for key, value in expect.get("counts", {}).items():
        assert counts.get(key) == value, (key, counts)
    if "dropped" in expect:
        assert sum(v for k, v in counts.items() if k.startswith("dropped: ")) == expect["dropped"], counts


def test_the_corpus_is_large_and_covers_every_kind():
    kinds = {c.get("kind", "text").split("_unpaired")[0] for c in CASES}
    assert len(CASES) >= 60 and kinds == {"text", "vision_language", "image_diffusion"}
    assert len({c["id"] for c in CASES}) == len(CASES)
    # the silent acceptances the corpus exists for each have a case
    for must in ("chosen_equals_rejected", "nan_margin", "duplicate_rows", "empty_caption", "one_pixel",
                 "decompression_bomb", "negative_objective_weight", "duplicate_key", "exponent_float",
                 "not_utf8", "disk_full", "corrupt_model_weights", "truncated_checkpoint"):
        assert any(must in c["id"] for c in CASES), must
