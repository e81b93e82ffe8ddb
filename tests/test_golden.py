"""Golden values: what the built-in plugins compute today on fixed tiny inputs.

For ``text``, ``vision_language`` and ``image_diffusion``: the policy's surrogate of a fixed
batch under several need sets, the loss of each of 5 training steps, and a checksum of every
tensor the export writes. ``tests/golden_values.json`` was written from the code as it stood
before the plugin families moved into the shared ``denoising`` and ``tokens`` libraries; a
refactor must leave every value equal (to float32 rounding: sums over a few thousand values
may be reordered).

Remake the file only when a change is *meant* to change numbers, and say so in the commit:

    .venv/bin/python tests/test_golden.py --write
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden_values.json"
sys.path[:0] = [str(HERE / "vision_language"), str(HERE / "image_diffusion"), str(HERE / "train")]

#: the need that asks for ``log p(chosen | prompt, corrupted condition)`` (mDPO)
CORRUPTED = "terms:chosen|condition=corrupted"


#: the trainer tests' text recipe (tests/train/conftest.py), 5 steps
_TEXT = {
    "model": {"modality": "text", "builder": "tiny_llama",
              "builder_args": {"hidden_size": 16, "layers": 1, "heads": 2},
              "lora": {"r": 4, "alpha": 8}, "options": {"max_length": 48}},
    "data": {"train": str(HERE.parent / "assets/text_prefs/train.jsonl"), "schema": "preference"},
    "objective": {"name": "dpo", "params": {"beta": 0.5}},
    "reference": {"strategy": "adapters_off"},
    "train": {"seed": 0, "batch_size": 8, "lr": 2e-2, "max_steps": 5, "max_grad_norm": 1.0},
    "eval": {"every": 0},
    "logging": {"every": 1, "tensorboard": False, "progress": False},
}


def _text(folder: Path):
    from mmalign import config

    raw = config.merge(_TEXT, {"logging": {"output_dir": str(folder)}})
    return config.from_dict(raw, source="<golden-text>"), {
        "plain": frozenset(), "units": frozenset({"token_logps"}),
        "extras": frozenset({"token_logps", "vocab_logps", "hidden"})}


def _vision_language(folder: Path):
    from vl_helpers import vl_recipe, write_colour_set

    data = write_colour_set(folder / "data", rejected_image=True)
    recipe = vl_recipe(folder / "run", data, train={"max_steps": 5, "batch_size": 4},
                       objective={"name": "mdpo", "params": {"beta": 0.5}})
    return recipe, {"plain": frozenset(), "units": frozenset({"token_logps"}),
                    "extras": frozenset({"token_logps", "vocab_logps", "hidden"}),
                    "corrupted": frozenset({CORRUPTED})}


def _image_diffusion(folder: Path):
    from diffusion_helpers import diffusion_recipe, pickapic_rows, write_parquet

    folder.mkdir(parents=True, exist_ok=True)
    data = write_parquet(folder / "pick.parquet", pickapic_rows(6))
    recipe = diffusion_recipe(folder / "run", data, train={"max_steps": 5, "batch_size": 2})
    return recipe, {"plain": frozenset()}


def _text_kto(folder: Path):
    """Unpaired rows: labels and KTO's mismatched-prompt term."""
    from mmalign import config

    raw = config.merge(_TEXT, {"logging": {"output_dir": str(folder)},
                               "data": {"train": str(HERE / "data/text_unpaired.jsonl"), "schema": "unpaired"},
                               "train": {"batch_size": 4}, "objective": {"name": "kto", "params": {"beta": 0.5}}})
    return config.from_dict(raw, source="<golden-text-kto>"), {
        "kto": frozenset({"label", "terms:kl_mismatched"})}


def _sdxl_v(folder: Path):
    """The SDXL-class UNet (added time ids, two text encoders) with v-prediction targets."""
    from diffusion_helpers import diffusion_recipe, pickapic_rows, write_parquet

    folder.mkdir(parents=True, exist_ok=True)
    data = write_parquet(folder / "pick.parquet", pickapic_rows(6))
    recipe = diffusion_recipe(folder / "run", data, train={"max_steps": 5, "batch_size": 2},
                              model={"builder": "tiny_sdxl", "builder_args": {"prediction_type": "v_prediction"}})
    return recipe, {"plain": frozenset()}


CASES = {"text": _text, "text_kto": _text_kto, "vision_language": _vision_language,
         "image_diffusion": _image_diffusion, "image_diffusion_sdxl_v": _sdxl_v}


def _values(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().double().flatten()]


def _surrogates(session, needs_sets) -> dict:
    """The untrained policy's surrogate of the first four training rows, per need set."""
    s = session
    batch = s.modality.collate(s.train_records[:4])
    out = {}
    with torch.no_grad():
        for label, needs in needs_sets.items():
            draw = s.modality.draw(batch, s.recipe.train.seed, s.policy)
            sur = s.modality.surrogate(s.policy, batch, draw, needs)
            entry = {"chosen": _values(sur.chosen)}
            if sur.rejected is not None:
                entry["rejected"] = _values(sur.rejected)
            if sur.chosen_units is not None:
                entry["units_sum"] = float(sur.chosen_units.double().sum())
            for name, value in sorted(sur.terms.items()):
                entry[f"term:{name.split('=', 1)[-1]}"] = _values(value)
            for name, value in sorted(sur.extras.items()):
                entry[f"extra:{name}"] = [float(value.double().sum()), float(value.double().abs().sum())]
            out[label] = entry
    return out


def _export_checksums(export_dir: Path) -> dict:
    """Per safetensors tensor: shape, sum and absolute sum; plus the other file names."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted(export_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = str(path.relative_to(export_dir))
        if path.suffix == ".safetensors":
            tensors = load_file(str(path))
            out[rel] = {k: [list(v.shape), float(v.double().sum()), float(v.double().abs().sum())]
                        for k, v in sorted(tensors.items())}
        else:
            out[rel] = "present"
    return out


def compute(name: str, folder: Path) -> dict:
    from mmalign.train import run

    torch.set_num_threads(1)
    recipe, needs_sets = CASES[name](folder)
    session = run.build(recipe)
    try:
        surrogates = _surrogates(session, needs_sets)
    finally:
        session.lock.release()
    session = run.train(recipe, overwrite=True)
    losses = [row["loss"] for row in map(json.loads, (session.run_dir / "metrics.jsonl").read_text().splitlines())
              if "loss" in row]
    return {"surrogates": surrogates, "losses": losses,
            "export": _export_checksums(session.run_dir / "export")}


def _close(actual, expected, where: str) -> None:
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _close(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _close(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=2e-5, abs=1e-6), f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_values_unchanged(name, tmp_path, one_thread):
    expected = json.loads(GOLDEN.read_text())[name]
    _close(compute(name, tmp_path), expected, name)


if __name__ == "__main__":
    import tempfile

    if "--write" not in sys.argv:
        sys.exit("usage: tests/test_golden.py --write")
    with tempfile.TemporaryDirectory() as tmp:
        values = {name: compute(name, Path(tmp) / name) for name in sorted(CASES)}
    GOLDEN.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
