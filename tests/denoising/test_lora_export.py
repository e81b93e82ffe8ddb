"""The library's LoRA export knows no network class: a tiny SD3 transformer (not a UNet),
exported for ``StableDiffusion3Pipeline`` as its ``transformer`` component, reloads with
diffusers' ``load_lora_adapter`` and predicts what the trained model predicts."""
from __future__ import annotations

import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from peft import LoraConfig

from mmalign.modalities.denoising.export import LORA_FILE, export_denoiser
from mmalign.train.adapters import inject


def tiny_transformer(seed: int = 0) -> SD3Transformer2DModel:
    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                 caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=8)


def output(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 5, 16, generator=gen)
    with torch.no_grad():
        return model(hidden_states=x, encoder_hidden_states=text, pooled_projections=torch.randn(1, 16, generator=gen),
                     timestep=torch.tensor([10])).sample


def test_lora_export_of_a_transformer_reloads(tmp_path):
    model = inject(tiny_transformer(), LoraConfig(r=2, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]))
    with torch.no_grad():  # a LoRA starts at B = 0; random B stands for a trained adapter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    written = export_denoiser(model, str(tmp_path), "# tiny", StableDiffusion3Pipeline, component="transformer")
    assert [p.rsplit("/", 1)[-1] for p in written] == [LORA_FILE, "adapter_config.json",
                                                      "adapter_model.safetensors", "README.md"]
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("# tiny") and "StableDiffusion3Pipeline.from_pretrained" in card
    fresh = tiny_transformer()
    base = output(fresh)
    fresh.load_lora_adapter(str(tmp_path), weight_name=LORA_FILE, prefix="transformer")
    torch.testing.assert_close(output(fresh), output(model), rtol=1e-5, atol=1e-6)
    assert (output(model) - base).abs().max() > 1e-3


def test_full_export_writes_the_component_folder(tmp_path):
    model = tiny_transformer()
    written = export_denoiser(model, str(tmp_path), "# full", StableDiffusion3Pipeline, component="transformer")
    assert written == [str(tmp_path / "transformer"), str(tmp_path / "README.md")]
    assert "SD3Transformer2DModel.from_pretrained(THIS_FOLDER, subfolder='transformer')" in (
        tmp_path / "README.md").read_text()
    reloaded = SD3Transformer2DModel.from_pretrained(str(tmp_path / "transformer"))
    torch.testing.assert_close(output(reloaded), output(model), rtol=0, atol=0)
