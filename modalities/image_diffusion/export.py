"""Writing a trained UNet in the formats diffusers and peft load.

With LoRA adapters: diffusers' LoRA file (``pytorch_lora_weights.safetensors``, with the
adapter's config, hence its alpha, in the safetensors metadata) that
``StableDiffusionPipeline.load_lora_weights(out_dir)`` / ``StableDiffusionXLPipeline...`` load,
and a peft adapter folder ``peft_adapter/`` (``adapter_config.json``,
``adapter_model.safetensors``). Without adapters: the diffusers UNet folder ``unet/``.
Always a ``README.md`` model card.
"""
from __future__ import annotations

from pathlib import Path

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

from mmalign.train import adapters

LORA_FILE = "pytorch_lora_weights.safetensors"


def pipeline_class(model: UNet2DConditionModel):
    sdxl = model.config.addition_embed_type == "text_time"
    return StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline


def export_unet(model: UNet2DConditionModel, out_dir: str, card: str) -> list[str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = adapters.export_name(model)
    written = _export_lora(model, out, name) if name else _export_full(model, out)
    readme = out / "README.md"
    readme.write_text(_card(card, model, name is not None))
    return [str(p) for p in written] + [str(readme)]


def _export_lora(model: UNet2DConditionModel, out: Path, name: str) -> list[Path]:
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=name)
    config = adapters.adapter_configs(model)[name]
    pipeline_class(model).save_lora_weights(
        str(out), unet_lora_layers=convert_state_dict_to_diffusers(state),
        unet_lora_adapter_metadata=config.to_dict(), weight_name=LORA_FILE, safe_serialization=True)
    return [out / LORA_FILE, *adapters.save_adapter(model, out / "peft_adapter", name)]


def _export_full(model: UNet2DConditionModel, out: Path) -> list[Path]:
    model.save_pretrained(str(out / "unet"), safe_serialization=True)
    return [out / "unet"]


def _card(text: str, model: UNet2DConditionModel, lora: bool) -> str:
    cls = pipeline_class(model).__name__
    if lora:
        usage = (f"pipe = {cls}.from_pretrained(BASE_MODEL_FOLDER)\n"
                 "pipe.load_lora_weights(THIS_FOLDER)")
    else:
        usage = (f"unet = UNet2DConditionModel.from_pretrained(THIS_FOLDER, subfolder='unet')\n"
                 f"pipe = {cls}.from_pretrained(BASE_MODEL_FOLDER, unet=unet)")
    return f"{text.rstrip()}\n\n## Loading\n\n```python\nfrom diffusers import {cls}, UNet2DConditionModel\n{usage}\n```\n"
