"""Writing a trained denoiser in the formats diffusers and peft load, through the denoising
library (:func:`mmalign.modalities.denoising.export.export_denoiser`).

* ACE-Step: with LoRA, ``pytorch_lora_weights.safetensors`` (peft keys under ``transformer.``)
  that ``AceStepPipeline.load_lora_weights(out_dir)`` loads, and ``peft_adapter/``;
  without, ``transformer/``.
* Tango's form has no diffusers pipeline: the UNet's LoRA file is written in the SD format
  (``unet.``-prefixed diffusers keys), which ``UNet2DConditionModel.load_lora_adapter(out_dir,
  prefix="unet", weight_name="pytorch_lora_weights.safetensors")`` loads; without LoRA, ``unet/``.
"""
from __future__ import annotations

from diffusers import AceStepPipeline, StableDiffusionPipeline
from torch import nn

from mmalign.modalities.denoising.export import export_denoiser

#: the pipeline class whose ``save_lora_weights`` writes each form's file, and the component
WRITERS = {"ace_step": (AceStepPipeline, "transformer"), "tango": (StableDiffusionPipeline, "unet")}


def export_audio_denoiser(model: nn.Module, kind: str, out_dir: str, card: str) -> list[str]:
    pipeline_cls, component = WRITERS[kind]
    return export_denoiser(model, out_dir, card, pipeline_cls, component=component)
