"""A tiny model and a few rows of this plugin, for ``mmalign check-plugin image_diffusion``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from mmalign.modality import ModelSpec


def example(folder: str) -> dict[str, Any]:
    """The tiny SD 1.5-class UNet at 32 px and four image pairs (PNG files), each preferring a
    warm square to a cold one."""
    root = Path(folder)
    rows = []
    for i in range(4):
        for side, colour in (("chosen", (200, 40 + 30 * i, 30)), ("rejected", (30, 40 + 30 * i, 200))):
            Image.new("RGB", (36, 36), colour).save(root / f"{side}-{i}.png")
        rows.append({"caption": f"a square {i}", "chosen": str(root / f"chosen-{i}.png"),
                     "rejected": str(root / f"rejected-{i}.png")})
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"spec": ModelSpec(builder="tiny_sd15"), "data": str(data), "options": {"resolution": 32},
            "schema": "image_diffusion:image_pairs"}
