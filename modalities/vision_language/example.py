"""A tiny model and a few rows of this plugin, for ``mmalign check-plugin vision_language``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from mmalign.modality import ModelSpec

#: flat colour images, each answered with its own colour (chosen) or the next one (rejected)
COLOURS = {"red": (220, 20, 20), "blue": (20, 40, 220), "green": (20, 200, 40), "yellow": (230, 220, 20)}


def example(folder: str) -> dict[str, Any]:
    """The tiny LLaVA and four RLAIF-V rows over flat colour images."""
    root = Path(folder)
    names = list(COLOURS)
    rows = []
    for k, colour in enumerate(names):
        Image.new("RGB", (32, 32), COLOURS[colour]).save(root / f"{colour}.png")
        rows.append({"image": f"{colour}.png", "question": "What color is the image?",
                     "chosen": f"the image is {colour} .", "rejected": f"the image is {names[(k + 1) % 4]} ."})
    data = root / "colours.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"spec": ModelSpec(builder="tiny_llava"), "data": str(data), "options": {"max_length": 64},
            "schema": "vision_language:rlaif_v"}
