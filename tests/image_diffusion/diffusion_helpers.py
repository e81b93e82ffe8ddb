"""Shared helpers of the image-diffusion tests: tiny images, data files and a modality."""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmalign.modality import ModelSpec
from mmalign.modalities.image_diffusion import ImageDiffusionModality


def png(color=(200, 30, 30), mode: str = "RGB", size: tuple[int, int] = (40, 36)) -> bytes:
    """PNG bytes of a tiny image with a horizontal gradient (so flips and crops show)."""
    image = Image.new(mode, size, color)
    if mode == "RGB":
        for x in range(size[0]):
            for y in range(size[1]):
                image.putpixel((x, y), ((color[0] + 5 * x) % 256, (color[1] + 3 * y) % 256, color[2]))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_parquet(path, rows: list[dict]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def pickapic_rows(n: int = 4) -> list[dict]:
    """``n`` Pick-a-Pic rows with labels 1, 0, 1, 0, ...; no ties."""
    return [dict(caption=f"cube {i}", jpg_0=png((40 * i, 10, 90)), jpg_1=png((10, 40 * i, 20)),
                 label_0=float(1 - i % 2)) for i in range(n)]


def make_modality(builder: str = "tiny_sd15", prediction_type: str = "epsilon", **options):
    options.setdefault("resolution", 32)
    modality = ImageDiffusionModality(**options)
    policy = modality.load_policy(ModelSpec(builder=builder, builder_args={"prediction_type": prediction_type}))
    return modality, policy


def count_calls(modality) -> dict[str, int]:
    """Count forward calls of the VAE encoder and every text encoder with forward hooks."""
    parts = modality.parts
    modules = {"vae_encoder": parts.vae.encoder, "text_encoder": parts.text_encoder}
    if parts.text_encoder_2 is not None:
        modules["text_encoder_2"] = parts.text_encoder_2
    calls = dict.fromkeys(modules, 0)
    for name, module in modules.items():
        module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    return calls


#: a recipe for tiny image-diffusion runs through the trainer: SD 1.5-class UNet at 32 px,
#: LoRA with the adapters-off reference, Diffusion-DPO's beta
RECIPE = {
    "model": {"modality": "image_diffusion", "builder": "tiny_sd15", "lora": {"r": 4, "alpha": 8},
              "options": {"resolution": 32, "cache": True, "sample_steps": 2, "samples_per_prompt": 1}},
    "data": {"schema": "pickapic"},
    "objective": {"name": "dpo", "params": {"beta": 5000}},
    "reference": {"strategy": "adapters_off"},
    "train": {"seed": 0, "batch_size": 2, "lr": 1e-3, "max_steps": 4, "max_grad_norm": 1.0},
    "eval": {"every": 0},
    "logging": {"every": 1, "tensorboard": False, "progress": False},
}


def diffusion_recipe(output_dir, train_file: str, **sections):
    """A validated recipe from :data:`RECIPE`, the training file and section changes."""
    from mmalign import config

    raw = config.merge(RECIPE, {"data": {"train": train_file}, "logging": {"output_dir": str(output_dir)}})
    return config.from_dict(config.merge(raw, sections), source=f"<{output_dir}>")


#: a tiny open_clip model (random weights) for scorer tests
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
TINY_CLIP_NAME = "mmalign-tiny-clip"


def register_tiny_clip(folder) -> str:
    """Add :data:`TINY_CLIP` to open_clip's model configs; return its name."""
    import json
    from pathlib import Path

    import open_clip

    (Path(folder) / f"{TINY_CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(Path(folder))
    return TINY_CLIP_NAME
