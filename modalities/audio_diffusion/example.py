"""A tiny model and a few rows of this plugin, for ``mmalign check-plugin audio_diffusion``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from mmalign.modality import ModelSpec

from mmalign.modalities.audio_io import write_wav

RATE, SECONDS = 8000, 1.0


def tone(freq: float, seconds: float = SECONDS, rate: int = RATE, amp: float = 0.5) -> torch.Tensor:
    """A mono sine ``[1, samples]``."""
    t = torch.arange(round(seconds * rate)) / rate
    return (amp * torch.sin(2 * math.pi * freq * t))[None]


def write_pairs(root: Path, rows: int = 4) -> Path:
    """``rows`` pairs preferring a low tone to a high one, as WAV files and ``pairs.jsonl``."""
    lines = []
    for i in range(rows):
        write_wav(root / f"chosen-{i}.wav", tone(220 + 20 * i), RATE)
        write_wav(root / f"rejected-{i}.wav", tone(1500 + 100 * i), RATE)
        lines.append({"prompt": f"a low calm tone {i}", "chosen_audio": f"chosen-{i}.wav",
                      "rejected_audio": f"rejected-{i}.wav"})
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return data


TINY = {"tiny_ace_step": {"seconds": 1.0, "min_seconds": 0.5},
        "tiny_tango": {"seconds": 0.5, "min_seconds": 0.25, "max_sequence_length": 16}}


def example(folder: str, builder: str = "tiny_tango") -> dict[str, Any]:
    """A tiny model on four low-over-high tone pairs."""
    return {"spec": ModelSpec(builder=builder), "data": str(write_pairs(Path(folder))), "options": dict(TINY[builder]),
            "schema": "audio_diffusion:audio_pairs"}
