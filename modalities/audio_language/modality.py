"""The audio-language modality: the vision-language plugin's machinery under the name
``audio_language``, with an example on the tiny Qwen2-Audio (``mmalign check-plugin audio_language``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmalign.modalities.vision_language.modality import VisionLanguageModality
from mmalign.modality import ModelSpec

#: the example's sounds: a low and a high tone, each answered with its pitch (chosen) or the other
TONES = {"low": 220.0, "high": 880.0}


class AudioLanguageModality(VisionLanguageModality):
    """Audio-understanding LLMs (``Qwen2AudioForConditionalGeneration``), scored per pair:
    summed response-token log-probs, the sound encoded once per pair (options:
    :class:`~mmalign.modalities.vision_language.modality.VisionLanguageOptions`; ``audio_seconds``
    bounds a sound)."""

    name = "audio_language"

    @staticmethod
    def example(folder: str) -> dict[str, Any]:
        """The tiny Qwen2-Audio and four ``audio_qa`` rows over two tones."""
        from mmalign.modalities.audio_io import write_wav

        root = Path(folder)
        rows = []
        for k, (pitch, hertz) in enumerate(TONES.items()):
            t = torch.arange(16000) / 16000
            write_wav(root / f"{pitch}.wav", (0.5 * torch.sin(2 * torch.pi * hertz * t))[None], 16000)
            other = list(TONES)[1 - k]
            for question in ("Is the tone low or high?", "What do you hear?"):
                rows.append({"audio": f"{pitch}.wav", "question": question, "chosen": f"a {pitch} tone",
                             "rejected": f"a {other} tone"})
        data = root / "tones.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return {"spec": ModelSpec(builder="tiny_qwen2_audio"), "data": str(data), "options": {"max_length": 128},
                "schema": "audio_language:audio_qa"}
