"""Writing a trained denoiser (UNet or transformer) in the formats diffusers and peft load.

With LoRA adapters: diffusers' LoRA file (``pytorch_lora_weights.safetensors``, with the
adapter's config, hence its alpha, in the safetensors metadata) that the pipeline's
``load_lora_weights(out_dir)`` loads, and a peft adapter folder ``peft_adapter/``
(``adapter_config.json``, ``adapter_model.safetensors``). Without adapters: the model's own
diffusers folder ``<component>/``. Always a ``README.md`` model card.

Nothing here knows the network class: the plugin names the pipeline class (whose
``save_lora_weights`` writes the file) and the pipeline component the model is (``unet``,
``transformer``). A pipeline without ``save_lora_weights`` (``DanceDiffusionPipeline``) gets
the peft adapter and, beside it, the component with the adapter merged into its weights.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from mmalign.train import adapters

LORA_FILE = "pytorch_lora_weights.safetensors"


def export_denoiser(model: nn.Module, out_dir: str, card: str, pipeline_cls: type,
                    component: str = "unet") -> list[str]:
    """LoRA files or the full ``component`` folder, and the model card; the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = adapters.export_name(model)
    lora_file = name is not None and hasattr(pipeline_cls, "save_lora_weights")
    if name is None:
        written = export_full(model, out, component)
    elif lora_file:
        written = export_lora(model, out, name, pipeline_cls, component)
    else:
        written = [*adapters.save_adapter(model, out / "peft_adapter", name),
                   *export_full(adapters.merged_copy(model, name), out, component)]
    readme = out / "README.md"
    readme.write_text(model_card(card, pipeline_cls, type(model).__name__, component, lora_file))
    return [str(p) for p in written] + [str(readme)]


def export_lora(model: nn.Module, out: Path, name: str, pipeline_cls: type, component: str) -> list[Path]:
    """Adapter ``name`` as the pipeline's LoRA file and as a peft adapter folder.

    A UNet's keys are converted from peft's to diffusers' (as the SD / SDXL training scripts
    do); a transformer's stay peft's, as the SD3 / FLUX scripts save them: the conversion maps
    ``to_q.lora_A`` to the old attention-processor names, which a transformer's loader no
    longer matches, so the adapter would load half-applied."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=name)
    config = adapters.adapter_configs(model)[name]
    if component == "unet":
        state = convert_state_dict_to_diffusers(state)
    layers = {f"{component}_lora_layers": state,
              f"{component}_lora_adapter_metadata": config.to_dict()}
    pipeline_cls.save_lora_weights(str(out), weight_name=LORA_FILE, safe_serialization=True, **layers)
    return [out / LORA_FILE, *adapters.save_adapter(model, out / "peft_adapter", name)]


def export_full(model: nn.Module, out: Path, component: str) -> list[Path]:
    model.save_pretrained(str(out / component), safe_serialization=True)
    return [out / component]


def model_card(text: str, pipeline_cls: type, model_cls: str, component: str, lora: bool) -> str:
    """``text`` and how to load the export into ``pipeline_cls`` (``lora``: as a LoRA file;
    otherwise the ``component`` folder, trained or with its adapter merged)."""
    cls = pipeline_cls.__name__
    if lora:
        usage = f"pipe = {cls}.from_pretrained(BASE_MODEL_FOLDER)\npipe.load_lora_weights(THIS_FOLDER)"
    else:
        usage = (f"{component} = {model_cls}.from_pretrained(THIS_FOLDER, subfolder='{component}')\n"
                 f"pipe = {cls}.from_pretrained(BASE_MODEL_FOLDER, {component}={component})")
    return (f"{text.rstrip()}\n\n## Loading\n\n```python\nfrom diffusers import {cls}, {model_cls}\n"
            f"{usage}\n```\n")
