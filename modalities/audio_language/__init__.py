"""The ``audio_language`` modality plugin: DPO-family alignment of audio-understanding LLMs
(Qwen2-Audio) against sound hallucination.

A sound reaches such a model as an image or a clip reaches a vision-language one: the
processor expands a placeholder into ``<|AUDIO|>`` tokens and the audio encoder fills them.
So this plugin is the vision-language one under its own name, with its own example: records,
encoding, the packed pair forward, the feature cache, the precomputed reference and export are
the same code (:mod:`mmalign.modalities.vision_language`), and ``audio_qa`` rows (``audio``,
``question``, ``chosen``, ``rejected``) or LLaMA-Factory / ms-swift rows with ``audios`` load.
"""
from mmalign.modalities.audio_language.modality import AudioLanguageModality
from mmalign.modalities.audio_language import evaluators  # noqa: F401  (registers the evaluators)

__all__ = ["AudioLanguageModality"]
