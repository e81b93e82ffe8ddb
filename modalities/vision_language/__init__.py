"""The ``vision_language`` modality plugin: DPO-family alignment of image- and video-language
models (LLaVA, LLaVA-NeXT-Video, Qwen2-VL / Qwen2.5-VL) against hallucination, with CHAIR /
POPE / AMBER-style evaluators for images and temporal / CHAIR / POPE evaluators for clips. A
thin plugin on :mod:`mmalign.modalities.tokens` (scoring, packing, truncation, fields,
export); what is here is about images and clips.

Importing the package registers its dataset schemas (``vision_language:rlaif_v``,
``vision_language:video_qa``, ...; recipes may write the bare names) and its evaluators
(``chair``, ``pope``, ``amber_coverage``, ``video_temporal``, ``video_chair``, ``video_pope``).
"""
from mmalign.modalities.vision_language import schemas  # noqa: F401  (registers the schemas)
from mmalign.modalities.vision_language.modality import LORA_TARGETS, VisionLanguageModality, VisionLanguageOptions
from mmalign.modalities.vision_language import video_evaluators  # noqa: F401  (registers every evaluator)

__all__ = ["LORA_TARGETS", "VisionLanguageModality", "VisionLanguageOptions"]
