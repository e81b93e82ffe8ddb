"""Plain helpers of the audio-language tests: sounds written as WAV, ``audio_qa`` rows over
them, and the tiny modality that reads them."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from mmalign.modalities.audio_io import write_wav
from mmalign.modalities.vision_language.modality import VisionLanguageModality
from mmalign.modality import ModelSpec

ANSWERS = [("a dog is barking", "a bell rings"), ("a bell rings twice", "a dog is barking"),
           ("birds sing", "a car passes"), ("a car passes by", "birds sing")]
#: sound lengths in seconds: different lengths give different token counts (25 and 12 per 1 s and 0.5 s)
SECONDS = (1.0, 0.5, 0.75, 1.0)


def write_sounds(folder: Path, count: int, rate: int = 16000) -> list[str]:
    """``count`` tones with noise, of the lengths in :data:`SECONDS`, at ``rate`` Hz."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(count):
        samples = round(SECONDS[k % len(SECONDS)] * rate)
        t = torch.arange(samples) / rate
        noise = torch.randn(samples, generator=torch.Generator().manual_seed(k))
        wave = 0.5 * torch.sin(2 * torch.pi * (220 * (k + 1)) * t) + 0.05 * noise
        names.append(Path(write_wav(folder / f"sound{k}.wav", wave[None], rate)).name)
    return names


def write_audio_rows(folder: Path, count: int = 4, name: str = "sounds.jsonl") -> str:
    sounds = write_sounds(folder, count)
    rows = [{"audio": sound, "question": "What do you hear?", "chosen": ANSWERS[k % 4][0],
             "rejected": ANSWERS[k % 4][1]} for k, sound in enumerate(sounds)]
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def tiny_modality(**options) -> tuple[VisionLanguageModality, object]:
    modality = VisionLanguageModality(**{"max_length": 256, **options})
    return modality, modality.load_policy(ModelSpec(builder="tiny_qwen2_audio"))
