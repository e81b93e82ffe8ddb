"""Writing a trained Wan / CogVideoX transformer in the formats diffusers and peft load, through
the denoising library (:func:`mmalign.modalities.denoising.export.export_denoiser`): with LoRA
adapters, ``pytorch_lora_weights.safetensors`` that a plain ``WanPipeline`` /
``CogVideoXPipeline.load_lora_weights(out_dir)`` loads, and ``peft_adapter/``; without, the
``transformer/`` folder. Always a ``README.md`` model card.
"""
from __future__ import annotations

from torch import nn

from mmalign.models.video_diffusion import PIPELINES

from mmalign.modalities.denoising.export import export_denoiser


def export_transformer(model: nn.Module, kind: str, out_dir: str, card: str) -> list[str]:
    return export_denoiser(model, out_dir, card, PIPELINES[kind], component="transformer")
