"""Writing a trained SD 1.5 / SDXL UNet in the formats diffusers and peft load, through the
denoising library (:mod:`mmalign.modalities.denoising.export`): with LoRA adapters,
``pytorch_lora_weights.safetensors`` that ``StableDiffusionPipeline.load_lora_weights(out_dir)``
/ ``StableDiffusionXLPipeline...`` load and ``peft_adapter/``; without, the ``unet/`` folder.
Always a ``README.md`` model card.
"""
from __future__ import annotations

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

from mmalign.modalities.denoising.export import export_denoiser


def is_sdxl(model: UNet2DConditionModel) -> bool:
    """SDXL-class UNets take added time ids and a pooled text embedding."""
    return model.config.addition_embed_type == "text_time"


def pipeline_class(model: UNet2DConditionModel):
    return StableDiffusionXLPipeline if is_sdxl(model) else StableDiffusionPipeline


def export_unet(model: UNet2DConditionModel, out_dir: str, card: str) -> list[str]:
    return export_denoiser(model, out_dir, card, pipeline_class(model), component="unet")
