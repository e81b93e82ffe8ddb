"""A LoRA policy trained a few steps on the Diffusion-DPO loss, exported, and reloaded into
the diffusers pipeline with ``load_lora_weights``: the reloaded UNet predicts what the
trained one does and not what the base does. Full fine-tunes export a UNet folder."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig, PeftModel

import mmalign.objectives as objectives
from mmalign.models import diffusion as builders
from mmalign.modalities.image_diffusion.sampling import build_pipeline, save_grid
from mmalign.train.adapters import adapters_disabled, inject

from diffusion_helpers import make_modality


def train_lora(builder, pickapic_file, tmp_path, steps=3):
    modality, policy = make_modality(builder)
    inject(policy, LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                              target_modules=list(modality.lora_target_modules)))
    records = modality.prepare(modality.load_records(pickapic_file, "pickapic"), str(tmp_path / "cache"))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for step in range(steps):
        batch = modality.collate(records)
        draw = modality.draw(batch, 0, policy)  # the same draw each step: the loss must fall
        pol = modality.surrogate(policy, batch, draw, frozenset())
        with torch.no_grad(), adapters_disabled(policy):  # the reference: the same UNet, adapters off
            ref = modality.surrogate(policy, batch, draw, frozenset())
        loss = objectives.get("dpo")(pol, ref, beta=5000.0).loss.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return modality, policy, losses


def unet_output(unet, sdxl: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    embeds = torch.randn(2, 16, 64 if sdxl else 32, generator=gen)
    added = {"text_embeds": torch.randn(2, 32, generator=gen), "time_ids": torch.ones(2, 6)} if sdxl else None
    with torch.no_grad():
        return unet(x, torch.tensor([50, 500]), encoder_hidden_states=embeds, added_cond_kwargs=added).sample


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_lora_export_reloads_into_the_pipeline(builder, pickapic_file, tmp_path):
    sdxl = builder == "tiny_sdxl"
    modality, policy, losses = train_lora(builder, pickapic_file, tmp_path)
    assert losses[-1] < losses[0]  # training on the fixed draw moves the policy
    written = modality.export(policy, str(tmp_path / "out"), "# tiny Diffusion-DPO LoRA")
    assert {p.rsplit("/", 1)[-1] for p in written} == {
        "pytorch_lora_weights.safetensors", "adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert (tmp_path / "out" / "README.md").read_text().startswith("# tiny Diffusion-DPO LoRA")

    trained = unet_output(policy, sdxl)
    base = getattr(builders, builder)()
    base_out = unet_output(base, sdxl)
    pipe = build_pipeline(modality.parts, base)
    pipe.load_lora_weights(str(tmp_path / "out"))
    reloaded = unet_output(pipe.unet, sdxl)
    torch.testing.assert_close(reloaded, trained, rtol=1e-5, atol=1e-5)
    assert (reloaded - base_out).abs().max() > 1e-3

    # the peft adapter folder reloads too
    fresh = PeftModel.from_pretrained(getattr(builders, builder)(), str(tmp_path / "out" / "peft_adapter"))
    torch.testing.assert_close(unet_output(fresh.get_base_model(), sdxl), trained, rtol=1e-5, atol=1e-5)


def test_full_finetune_exports_a_unet_folder(pickapic_file, tmp_path):
    modality, policy = make_modality("tiny_sd15")
    with torch.no_grad():
        policy.conv_out.bias.add_(0.5)  # stands for a trained change
    written = modality.export(policy, str(tmp_path / "out"), "# full")
    assert str(tmp_path / "out" / "unet") in written
    assert (tmp_path / "out" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = UNet2DConditionModel.from_pretrained(str(tmp_path / "out" / "unet"))
    torch.testing.assert_close(unet_output(reloaded, False), unet_output(policy, False), rtol=0, atol=1e-6)


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_sample_returns_images_and_a_grid(builder, tmp_path):
    modality, policy = make_modality(builder, sample_steps=2)
    images = modality.sample(policy, ["a cube", "a ball"], n=2, seed=0)
    again = modality.sample(policy, ["a cube", "a ball"], n=2, seed=0)
    assert len(images) == 4 and images[0].size == (32, 32)
    assert list(images[3].getdata()) == list(again[3].getdata())  # reproducible from the seed
    from PIL import Image

    path = save_grid(images, str(tmp_path / "grid.png"), columns=2)
    assert Image.open(path).size == (64, 64)
