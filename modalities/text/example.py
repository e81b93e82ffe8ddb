"""A tiny model and a few rows of this plugin, for ``mmalign check-plugin text``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmalign import assets
from mmalign.modality import ModelSpec


def example(folder: str) -> dict[str, Any]:
    """The tiny Llama and the first six pairs of the shipped text preferences."""
    rows = assets.path("text_prefs/train.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    data = Path(folder) / "text_pairs.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"spec": ModelSpec(builder="tiny_llama", builder_args={"hidden_size": 16, "layers": 1, "heads": 2}),
            "data": str(data), "options": {"max_length": 48}, "schema": "text:preference"}
