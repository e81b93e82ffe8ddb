"""The ``vision_language`` modality plugin: DPO-family alignment of LLaVA-style models against
hallucination, with CHAIR / POPE / AMBER-style evaluators. A thin plugin on
:mod:`mmalign.modalities.tokens` (scoring, packing, truncation, fields, export); what is here
is about images.

Importing the package registers its dataset schemas (``vision_language:rlaif_v``,
``vision_language:vl_conversational``, ``vision_language:rlhf_v``, ``vision_language:vlfeedback``;
recipes may write the bare names); its evaluators register when ``.evaluators`` is imported
(the ``mmalign.evaluators`` entry point does that).
"""
from mmalign.modalities.vision_language import schemas  # noqa: F401  (registers the schemas)
from mmalign.modalities.vision_language.modality import LORA_TARGETS, VisionLanguageModality, VisionLanguageOptions

__all__ = ["LORA_TARGETS", "VisionLanguageModality", "VisionLanguageOptions"]
